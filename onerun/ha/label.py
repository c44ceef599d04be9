"""This pod's Raft role as a label, set through the Kubernetes API (docs/ha.md, "Leader
routing"): the ``<fullname>-leader`` Service selects the pod labelled leader.

Stdlib only (urllib, ssl): oned runs the hook within seconds of a role change, and it must
not wait for heavy imports. One JSON merge patch of the pod's labels, with the pod's own
service-account token and the cluster's CA as the kubelet mounts them. The token is read at
each call (the kubelet rotates it) and never logged.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

ROLE_LABEL = "onerun.io/raft-role"
ROLES = ("leader", "follower")
MERGE_PATCH = "application/merge-patch+json"
_MOST_OF_AN_ANSWER = 300  # characters of the API's answer kept in an error message


class LabelError(Exception):
    """Why the pod was not labelled; the message never holds the token."""


def pod_path(namespace: str, pod: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}"


def role_patch(role: str) -> bytes:
    """The merge patch that sets only this label and leaves the pod's other labels."""
    if role not in ROLES:
        raise ValueError(f"{role!r} is not a Raft role ({', '.join(ROLES)})")
    return json.dumps({"metadata": {"labels": {ROLE_LABEL: role}}}).encode()


def _context(credentials: Path) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(credentials / "ca.crt"))
    except (OSError, ssl.SSLError) as exc:
        raise LabelError(f"cannot load the cluster CA {credentials / 'ca.crt'}: "
                         f"{exc.strerror or exc}") from None


def _token(credentials: Path) -> str:
    try:
        token = (credentials / "token").read_text().strip()
    except OSError as exc:
        raise LabelError(f"cannot read the service-account token {credentials / 'token'}: "
                         f"{exc.strerror or exc}; the pod needs "
                         "automountServiceAccountToken: true") from None
    if not token:
        raise LabelError(f"the service-account token {credentials / 'token'} is empty")
    return token


def label_pod(api: str, namespace: str, pod: str, role: str, *, credentials: Path,
              timeout: float) -> None:
    """Set ``ROLE_LABEL: role`` on pod ``namespace/pod`` through the API server at ``api``
    (``https://host:port``); raise LabelError saying why not."""
    body = role_patch(role)
    if not api.startswith("https://"):
        raise LabelError(f"{api!r} is not an https:// URL: the token never travels in clear")
    request = urllib.request.Request(  # noqa: S310 - https only, checked above
        api.rstrip("/") + pod_path(namespace, pod), data=body, method="PATCH",
        headers={"Content-Type": MERGE_PATCH, "Accept": "application/json",
                 "Authorization": f"Bearer {_token(credentials)}"})
    context = _context(credentials)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:  # noqa: S310
            answer.read()
    except urllib.error.HTTPError as exc:
        raise LabelError(f"the API server refused the patch of pod {namespace}/{pod}: "
                         f"{exc.code} {exc.reason}: {_status_message(exc)}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):  # connecting or the TLS handshake
            raise LabelError(f"no answer from the API server {api} within {timeout:g} s: "
                             f"{exc.reason}") from None
        raise LabelError(f"cannot reach the API server {api}: {exc.reason}") from None
    except OSError as exc:  # TimeoutError while reading the answer, a reset connection
        raise LabelError(f"the API server {api} broke off or gave no answer within "
                         f"{timeout:g} s: {exc}") from None


def _status_message(error: urllib.error.HTTPError) -> str:
    """The ``message`` of the API's Status answer (e.g. RBAC's "cannot patch resource")."""
    try:
        raw = error.read(64 * 1024)
        status = json.loads(raw)
        message = status.get("message") if isinstance(status, dict) else None
        text = str(message) if message else raw.decode("utf-8", "replace")
    except (OSError, ValueError):
        return "no readable answer"
    return text[:_MOST_OF_AN_ANSWER]
