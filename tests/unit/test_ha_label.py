"""The pod's Raft role label through the Kubernetes API, and ``onerun raft-hook``.

The API server here is a **stand-in**: a TLS http.server on 127.0.0.1 with a certificate
from a throwaway CA (made with ``cryptography``), which checks what the real one would:
the method, the path, the merge-patch content type, the bearer token and the body. It
answers like the real one: the patched pod, or a Status with RBAC's message. The real API
server is exercised in the kind workflow on GitHub (docs/ha.md).
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from testlib import UPSTREAM_VERSIONS

from onerun.config import oneconf, render
from onerun.ha.hook import TIMEOUT_SECONDS
from onerun.ha.label import MERGE_PATCH, ROLE_LABEL, LabelError, label_pod
from onerun.layout import Layout
from onerun.plan import WriteFile
from onerun.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
TOKEN = "stand-in-service-account-token-0123456789"
NAMESPACE, POD = "cloud", "one-opennebula-1"
POD_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}"


# --- a throwaway CA and the stand-in's certificate ------------------------------------

def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(item: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM)
    return item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    cert_file: Path
    key_file: Path


def make_pki(where: Path, ca_name: str = "stand-in cluster CA") -> Pki:
    where.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("kube-apiserver stand-in", key, ca_name, ca_key, ca=False)
    (where / "server.crt").write_bytes(_pem(cert))
    (where / "server.key").write_bytes(_pem(key))
    return Pki(_pem(ca), where / "server.crt", where / "server.key")


# --- the stand-in API server --------------------------------------------------------------

@dataclass
class StandInApi:
    """What the stand-in saw, and how it answers the next patch."""

    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


def _handler(api: StandInApi) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test asserts on ``seen``."""

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            api.seen.append({
                "method": self.command, "path": self.path,
                "content_type": self.headers.get("Content-Type"),
                "authorization": self.headers.get("Authorization"),
                "body": json.loads(self.rfile.read(length) or b"null"),
            })

        def do_PATCH(self) -> None:
            self._record()
            seen = api.seen[-1]
            if seen["authorization"] != f"Bearer {TOKEN}":
                self._answer(401, {"kind": "Status", "message": "Unauthorized"})
            elif seen["content_type"] != MERGE_PATCH:
                self._answer(415, {"kind": "Status", "message": "unsupported media type"})
            elif api.status != 200:
                self._answer(api.status, {"kind": "Status", "message": (
                    f'pods "{POD}" is forbidden: User "system:serviceaccount:{NAMESPACE}:one" '
                    f'cannot patch resource "pods" in API group "" in the namespace '
                    f'"{NAMESPACE}"')})
            elif self.path != POD_PATH:
                self._answer(404, {"kind": "Status", "message": "pods not found"})
            else:
                labels = {"app.kubernetes.io/name": "opennebula",
                          **seen["body"]["metadata"]["labels"]}
                self._answer(200, {"kind": "Pod", "metadata": {"name": POD, "labels": labels}})

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH  # recorded, then judged the same

    return Handler


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def api(pki: Pki) -> Iterator[StandInApi]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    standin = StandInApi(url=f"https://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(standin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield standin
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def root(tmp_path: Path, pki: Pki) -> Path:
    """A root whose service-account directory holds the token and the stand-in's CA."""
    root = tmp_path / "root"
    credentials = Layout(root).service_account
    credentials.mkdir(parents=True)
    (credentials / "token").write_text(TOKEN + "\n")
    (credentials / "ca.crt").write_bytes(pki.ca_pem)
    return root


def credentials(root: Path) -> Path:
    return Layout(root).service_account


# --- label_pod ----------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["leader", "follower"])
def test_the_pod_is_labelled_with_one_merge_patch(api: StandInApi, root: Path,
                                                  role: str) -> None:
    label_pod(api.url, NAMESPACE, POD, role, credentials=credentials(root), timeout=5)
    assert api.seen == [{
        "method": "PATCH", "path": POD_PATH, "content_type": "application/merge-patch+json",
        "authorization": f"Bearer {TOKEN}",
        "body": {"metadata": {"labels": {"onerun.io/raft-role": role}}},
    }]


def test_rbacs_refusal_is_reported_without_the_token(api: StandInApi, root: Path) -> None:
    api.status = 403
    with pytest.raises(LabelError) as caught:
        label_pod(api.url, NAMESPACE, POD, "leader", credentials=credentials(root), timeout=5)
    message = str(caught.value)
    assert "403 Forbidden" in message and 'cannot patch resource "pods"' in message
    assert TOKEN not in message


def test_a_server_the_cluster_ca_did_not_sign_is_not_sent_the_token(
        api: StandInApi, root: Path, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", ca_name="another CA")
    (credentials(root) / "ca.crt").write_bytes(other.ca_pem)
    with pytest.raises(LabelError, match="CERTIFICATE_VERIFY_FAILED"):
        label_pod(api.url, NAMESPACE, POD, "leader", credentials=credentials(root), timeout=5)
    assert api.seen == []


def test_plain_http_is_refused_before_anything_is_sent(root: Path) -> None:
    with pytest.raises(LabelError, match="not an https:// URL"):
        label_pod("http://127.0.0.1:1", NAMESPACE, POD, "leader",
                  credentials=credentials(root), timeout=5)


def test_without_a_mounted_token_the_fix_is_named(api: StandInApi, root: Path) -> None:
    (credentials(root) / "token").unlink()
    with pytest.raises(LabelError, match="automountServiceAccountToken: true"):
        label_pod(api.url, NAMESPACE, POD, "leader", credentials=credentials(root), timeout=5)
    assert api.seen == []


def test_only_raft_roles_are_labels(api: StandInApi, root: Path) -> None:
    with pytest.raises(ValueError, match="not a Raft role"):
        label_pod(api.url, NAMESPACE, POD, "candidate", credentials=credentials(root), timeout=5)


# --- onerun raft-hook, as oned runs it ----------------------------------------------------

def run_hook(argv: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    """``argv`` as oned's fork would run it: its own process, ONERUN_ROOT from supervisord's
    environment. The timeout only keeps a hanging hook from hanging the test run."""
    env = {"PATH": os.environ.get("PATH", ""), "ONERUN_ROOT": str(root), "PYTHONPATH": str(REPO)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                          timeout=TIMEOUT_SECONDS + 30)


def hook_argv(role: str, api: str) -> list[str]:
    return [sys.executable, "-m", "onerun", "raft-hook", role, "--api", api,
            "--namespace", NAMESPACE, "--pod", POD]


def test_the_hook_labels_the_pod_and_says_so(api: StandInApi, root: Path) -> None:
    done = run_hook(hook_argv("leader", api.url), root)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"onerun raft-hook: pod {NAMESPACE}/{POD} labelled {ROLE_LABEL}=leader\n"
    assert [s["body"] for s in api.seen] == [{"metadata": {"labels": {ROLE_LABEL: "leader"}}}]


def test_the_hook_exits_0_with_one_line_when_the_api_is_down(root: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{closed.getsockname()[1]}"
    done = run_hook(hook_argv("follower", url), root)
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.startswith(f"onerun raft-hook: pod {NAMESPACE}/{POD} not labelled "
                                  f"{ROLE_LABEL}=follower: cannot reach the API server {url}")
    assert done.stderr.count("\n") == 1 and TOKEN not in done.stderr


def test_the_hook_gives_up_on_an_api_that_never_answers(root: Path) -> None:
    """A server that accepts the connection and says nothing: the hook stops at its own
    timeout instead of holding a thread of oned."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        done = run_hook(hook_argv("leader", url), root)
    assert done.returncode == 0
    assert f"no answer from the API server {url} within {TIMEOUT_SECONDS:g} s" in done.stderr


@pytest.mark.parametrize("argv", [
    [], ["candidate"], ["leader", "--api"], ["leader", "--api", "https://x:1", "--pod", "p"],
    ["leader", "--api", "https://x:1", "--namespace", "n", "--pod", "p", "--token", "t"],
])
def test_a_command_line_onerun_would_not_render_exits_2(argv: list[str], root: Path) -> None:
    done = run_hook([sys.executable, "-m", "onerun", "raft-hook", *argv], root)
    assert done.returncode == 2 and "usage: onerun raft-hook" in done.stderr


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_the_hooks_rendered_into_oned_conf_label_the_pod(
        api: StandInApi, root: Path, make_root: Callable[..., Path], version: str) -> None:
    """oned.conf's RAFT_*_HOOK run exactly as oned would: COMMAND, then ARGUMENTS split on
    blanks (src/hm/ExecuteHook.cc in OpenNebula/one)."""
    host, port = api.url.removeprefix("https://").split(":")
    environ = {"ONERUN_HA_MEMBERS": "a:2640,b:2640,c:2640", "ONERUN_HA_ADDRESS": "b:2640",
               "ONEADMIN_PASSWORD": "pw", "ONE_KEY": "0123456789abcdef0123456789abcdef",
               "ONERUN_HA_LABEL_POD": "1", "KUBERNETES_SERVICE_HOST": host,
               "KUBERNETES_SERVICE_PORT": port, "POD_NAMESPACE": NAMESPACE, "POD_NAME": POD}
    etc = make_root(version, name="etc")
    actions = render.render_configs(load_settings(environ, root=etc), Layout(etc), 1)
    [oned] = [a for a in actions if isinstance(a, WriteFile) and a.path.name == "oned.conf"]
    document = oneconf.parse(oned.content.decode())
    for hook, role in (("RAFT_FOLLOWER_HOOK", "follower"), ("RAFT_LEADER_HOOK", "leader")):
        vector = document.get(hook)
        assert isinstance(vector, dict)
        done = run_hook([vector["COMMAND"], *shlex.split(vector["ARGUMENTS"])], root)
        assert done.returncode == 0 and "labelled" in done.stdout, done.stderr
        assert api.seen[-1]["body"] == {"metadata": {"labels": {ROLE_LABEL: role}}}
    assert [s["path"] for s in api.seen] == [POD_PATH, POD_PATH]
