"""A hostile job or site writes terminal escape sequences into its status message and logs; `fedctl`
shows them as text, over real mutual TLS against a real federation."""
from __future__ import annotations

import json

from federation.cli.main import main
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.waiting import wait_for

# clear the screen, retitle the terminal, hide the rest of the line, a C1 control sequence introducer
HOSTILE = "done\x1b[2J\x1b]0;pwned\x07\rfake\x9b31m"
SHOWN = "done\\x1b[2J\\x1b]0;pwned\\x07\\x0dfake\\x9b31m"


def test_control_characters_from_a_site_reach_the_operator_as_escapes(federation, client, eu_agent, capsys):
    job = client.submit(make_spec("hostile", resources={"cpus": 1}))
    wait_for(lambda: eu_agent.next_assignments(), 5, "an assignment")
    eu_agent.report([pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_FAILED, message=HOSTILE)],
                    [pb.LogChunk(job_id=job.id, attempt=1, offset=0, data=HOSTILE.encode() + b"\n")])
    wait_for(lambda: job.status().state == "failed", 5, "the failure")
    pki = federation.pki
    flags = ["--address", federation.address, "--ca", str(pki["ca"].cert), "--cert", str(pki["admin"].cert),
             "--key", str(pki["admin"].key)]
    for command in (["status", job.id], ["logs", job.id], ["jobs"]):
        main([*command, *flags])
        out = capsys.readouterr()
        text = out.out + out.err
        assert not any((ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) < 0xA0 for c in text), command
        assert SHOWN[:20] in text, (command, text)   # `jobs` shows the first 60 characters
    main(["status", job.id, "--format", "json", *flags])
    assert HOSTILE in json.loads(capsys.readouterr().out)["attempts"][0]["message"]
