"""The change signal that streams on the event loop wait on: a change wakes the right waiters from
any thread, a site's stream sleeps through another site's changes, and a wait holds no thread."""
from __future__ import annotations

import asyncio
import threading

from federation.changes import Changes


def test_a_change_from_another_thread_wakes_the_waiting_streams_and_only_those_it_concerns():
    changes = Changes()

    async def scenario() -> tuple[bool, bool, bool]:
        seen, eu, us = changes.generation, changes.assignments("eu"), changes.assignments("us")
        threads_before = threading.active_count()
        any_change = asyncio.ensure_future(changes.changed(seen, 10))
        eu_wait = asyncio.ensure_future(changes.assignments_changed("eu", eu, 10))
        us_wait = asyncio.ensure_future(changes.assignments_changed("us", us, 0.3))
        await asyncio.sleep(0)   # all three waiting
        no_thread = threading.active_count() == threads_before
        bumper = threading.Thread(target=changes.bump, kwargs={"sites": ["eu"]})
        bumper.start()
        await asyncio.wait_for(asyncio.gather(any_change, eu_wait), 2)
        woken_us = us_wait.done()
        await us_wait   # its timeout, not the change, ends it
        bumper.join()
        return woken_us, changes.assignments("us") == us, no_thread

    woken_us, us_unchanged, no_thread = asyncio.run(scenario())
    assert not woken_us and us_unchanged and no_thread


def test_a_wait_returns_at_once_when_the_change_came_before_it_began():
    changes = Changes()
    seen = changes.assignments("eu")
    changes.bump()   # concerns every site

    async def scenario() -> None:
        await asyncio.wait_for(changes.assignments_changed("eu", seen, 10), 1)
        await asyncio.wait_for(changes.changed(0, 10), 1)

    asyncio.run(scenario())
    assert not changes._any and not changes._sites["eu"], "no waiter left behind"
