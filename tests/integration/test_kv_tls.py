"""mTLS between workers from cert-manager style files: peers with a valid certificate talk,
peers without one (or with one from another CA) are refused."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sampling_params import SamplingParams
from splitserve.kvtransfer.tls import TLSFiles
from splitserve.local.processes import Child
from splitserve.local.stack import ROUTER_READY
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


@pytest.mark.parametrize("with_certificate", [True, False], ids=["mtls", "plaintext"])
def test_router_reaches_tls_workers_only_with_the_certificate(
        tls_pair: tuple[WorkerProcess, WorkerProcess], pki: tuple[Path, Path],
        tiny_model: Path, log_dir: Path, reference: LLMEngine, with_certificate: bool) -> None:
    """A real router process with static discovery: with `--tls-dir` it serves through the TLS
    workers (the answer equals the colocated engine's); without it the workers refuse it and
    it never becomes ready."""
    prefill, decode = tls_pair
    tls = ["--tls-dir", str(pki[0])] if with_certificate else []
    router = Child(f"router-{'mtls' if with_certificate else 'plain'}", [
        "router", "--model", str(tiny_model), "--port", "0", "--discovery", "static",
        "--prefill", prefill.grpc_address, "--decode", decode.grpc_address,
        "--short-prompt-threshold", "0", "--stats-interval", "0.2", *tls],
        log_dir / f"router-{with_certificate}.log", ROUTER_READY)
    router.start()
    try:
        router.wait_ready(120)
        url = "http://" + router.ready_fields["http"]
        if not with_certificate:
            status = json.loads(urllib.request.urlopen(url + "/status", timeout=5).read())
            assert status["pools"]["decode"]["ready"] == 0
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(url + "/readyz", timeout=5)
            assert err.value.code == 503
            return
        wait_for(lambda: urllib.request.urlopen(url + "/readyz", timeout=5).status == 200, 30,
                 "the router to see the TLS workers")
        prompt = "Encrypted from the router on " * 6
        want = reference.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))[0]
        body = json.dumps({"model": tiny_model.name, "prompt": prompt, "max_tokens": 8,
                           "temperature": 0, "ignore_eos": True}).encode()
        request = urllib.request.Request(url + "/v1/completions", body,
                                         {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert answer["choices"][0]["text"] == want.text
    finally:
        router.stop(15)
