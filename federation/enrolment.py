"""A site joins the federation: a key made here, a signing request, a one-time token, a certificate back."""
from __future__ import annotations

import os
from pathlib import Path

import grpc

from federation.pki import new_request
from federation.service.errors import from_rpc_error
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc


def join(address: str, ca: Path, token: str, directory: Path, timeout: float = 10.0) -> Path:
    """Enrol through the federation's enrolment listener (checked against `ca`); the certificate's path.
    The key never leaves `directory`."""
    csr, key = new_request("site", directory)
    channel = open_channel(address, ca=ca)
    try:
        reply = pb_grpc.EnrollmentServiceStub(channel).EnrollSite(pb.EnrollSiteRequest(token=token, csr_pem=csr),
                                                                  timeout=timeout)
    except grpc.RpcError as e:
        key.unlink(missing_ok=True)
        raise from_rpc_error(e) from None
    finally:
        channel.close()
    cert = directory / "site.pem"
    cert.write_bytes(reply.cert_pem)
    (directory / "ca.pem").write_bytes(reply.ca_pem)
    os.chmod(cert, 0o644)
    return cert
