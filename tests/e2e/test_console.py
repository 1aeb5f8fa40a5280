"""The web console in a real headless Chromium (from the OS packages, driven by Selenium) against a
real federation with real sites: every page renders the live state, a submitter's browser sees
only its tenant's work, and a screenshot of each page is written to build/console/."""
from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from federation.client import Client
from federation.identity import scopes
from federation.pki import issue
from tests.e2e.browser import SHOTS, chromium, log_in, visit
from tests.e2e.test_federation import job
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def test_every_page_shows_the_live_federation_to_an_admin(federation, client, browser):
    log_in(browser, federation, "admin")
    assert browser.current_url.endswith("/console/sites")
    rows = {r.get_attribute("data-site"): r.text for r in browser.find_elements(By.CSS_SELECTOR, "tr.site")}
    assert set(rows) == {"eu-west", "us-east"} and "DE" in rows["eu-west"] and "US" in rows["us-east"]
    us = browser.find_element(By.CSS_SELECTOR, 'div.gpus[data-site="us-east"]')
    assert len(us.find_elements(By.CSS_SELECTOR, "rect")) == 2 and us.find_elements(By.CSS_SELECTOR, "line.nvlink")
    eu = browser.find_element(By.CSS_SELECTOR, 'div.gpus[data-site="eu-west"]')
    assert not eu.find_elements(By.CSS_SELECTOR, "line.nvlink"), "eu-west's PCIe GPUs share no NVLink"
    browser.save_screenshot(str(SHOTS / "sites.png"))

    j = client.submit(job("shown", entrypoint="python stamp.py", env={"HOLD": "1"}, resources={"cpus": 0.5}))
    j.wait(timeout=120)
    page = visit(browser, federation, "/console/jobs?state=succeeded", "jobs")
    assert j.id in page
    visit(browser, federation, f"/console/jobs/{j.id}", "job")
    assert browser.find_element(By.ID, "state").text == "succeeded"
    assert browser.find_element(By.ID, "summary").text.startswith("placed on ")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#verdicts tr")) >= 3   # a header and both sites
    assert "start " in browser.find_element(By.ID, "log").text, "the job's log tail"
    visit(browser, federation, "/console/queue", "queue")
    _, queues = client.queue()
    rows = [[c.text for c in r.find_elements(By.TAG_NAME, "td")]
            for r in browser.find_elements(By.CSS_SELECTOR, "#queues tr")]
    shown = {cells[0]: cells[3] for cells in rows if cells}   # queue, parent, tier, standing
    assert shown == {q.name: f"{q.share:.3f}" for q in queues}, "each queue with its fair-share standing"
    assert "Federated trainings" in visit(browser, federation, "/console/trainings", "trainings")
    visit(browser, federation, "/console/audit", "audit")
    assert browser.find_element(By.ID, "verification").text.startswith("intact:")
    assert j.id in browser.find_element(By.ID, "audit").text


def test_a_submitters_browser_sees_only_its_own_tenants_work(federation, client, browser):
    pki = federation.pki
    if "outsider" not in pki:
        pki["outsider"] = issue(pki["ca"], federation.work / "pki", "outsider",
                                units=tuple(scopes("submitter", ("e2e-other",))))
    theirs = client.submit(job("not-yours", entrypoint="true", resources={"cpus": 0.1}))
    with Client(federation.address, ca=pki["ca"].cert, cert=pki["outsider"].cert, key=pki["outsider"].key) as own:
        mine = client.job(own.submit(job("mine", tenant="e2e-other", entrypoint="true", resources={"cpus": 0.1})).id)
    log_in(browser, federation, "outsider")
    assert "outsider (submitter: e2e-other)" in browser.find_element(By.ID, "who").text
    page = visit(browser, federation, "/console/jobs", "jobs-outsider")
    assert mine.id in page and theirs.id not in page
    visit(browser, federation, f"/console/jobs/{mine.id}")
    assert browser.find_element(By.ID, "state").text in {"pending", "placed", "running", "succeeded"}
    visit(browser, federation, f"/console/jobs/{theirs.id}", "job-outsider")
    assert browser.find_element(By.ID, "error").text == f"job {theirs.id} not found"
    visit(browser, federation, "/console/audit")
    assert "may not read the audit log" in browser.find_element(By.ID, "error").text
    browser.delete_all_cookies()
    visit(browser, federation, "/console/jobs")
    assert "log in" in browser.find_element(By.ID, "error").text, "no session: no page"
    wait_for(lambda: theirs.status().terminal and mine.status().terminal, 60, "the jobs to end")
