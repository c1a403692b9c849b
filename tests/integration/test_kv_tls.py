"""mTLS between workers from cert-manager style files: peers with a valid certificate talk,
peers without one (or with one from another CA) are refused."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sampling_params import SamplingParams
from splitserve.kvtransfer.tls import TLSFiles
from splitserve.worker import worker_pb2 as pb
from splitserve.worker import worker_pb2_grpc as pb_grpc
from splitserve.worker.process import WorkerProcess, wait_for
from tests.integration.test_kv_transfer import disaggregated

NAME = "splitserve-worker"


def make_pki(root: Path, name: str) -> Path:
    """A CA and one certificate for `NAME` signed by it, laid out like a cert-manager Secret."""
    root.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={NAME}", "-keyout", "tls.key",
        "-out", "tls.csr")
    (root / "ext.cnf").write_text(f"subjectAltName=DNS:{NAME}\n")
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "tls.crt")
    return root


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("pki")
    return make_pki(base / "good", "good"), make_pki(base / "rogue", "rogue")


@pytest.fixture(scope="module")
def tls_pair(tiny_model: Path, log_dir: Path, pki: tuple[Path, Path]
             ) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    good = TLSFiles.from_dir(pki[0], NAME)
    flags = ("--tls-dir", str(pki[0]))
    prefill = WorkerProcess("prefill", tiny_model, *flags, log_dir=log_dir, tls=good)
    decode = WorkerProcess("decode", tiny_model, *flags, log_dir=log_dir, tls=good)
    yield prefill, decode
    prefill.stop()
    decode.stop()


def test_workers_with_certificates_from_the_same_ca_hand_off_kv(
        tls_pair: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine) -> None:
    prefill, decode = tls_pair
    ids = reference.encode_prompt("Encrypted hand-off " * 8)
    want = reference.generate([ids], SamplingParams(max_tokens=8, ignore_eos=True))[0]
    got, reply = disaggregated(prefill, decode, "tls-ok", ids,
                               pb.SamplingParams(max_tokens=8, ignore_eos=True))
    assert got == want.token_ids and reply.bytes_sent > 0


@pytest.mark.parametrize("who", ["plaintext", "rogue-ca", "no-client-cert"])
def test_peers_without_a_valid_certificate_are_refused(
        tls_pair: tuple[WorkerProcess, WorkerProcess], pki: tuple[Path, Path], who: str) -> None:
    _, decode = tls_pair
    good, rogue = TLSFiles.from_dir(pki[0], NAME), TLSFiles.from_dir(pki[1], NAME)
    if who == "plaintext":
        channel = grpc.insecure_channel(decode.grpc_address)
    elif who == "rogue-ca":
        creds = grpc.ssl_channel_credentials(good.ca, rogue.key, rogue.cert)
        channel = grpc.secure_channel(decode.grpc_address, creds,
                                      options=[("grpc.ssl_target_name_override", NAME)])
    else:
        creds = grpc.ssl_channel_credentials(good.ca)
        channel = grpc.secure_channel(decode.grpc_address, creds,
                                      options=[("grpc.ssl_target_name_override", NAME)])
    with channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.WorkerStub(channel).Stats(pb.StatsRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # the worker keeps serving its legitimate peers
    wait_for(lambda: decode.stats().role == "decode", 5, "the decode worker to answer")
