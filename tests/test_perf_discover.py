"""Issue 13: the listening-socket check reads the kernel's table by netlink (sock_diag), not by
``/proc/net/tcp``; both must see the same sockets, and /proc stays the fallback."""

from __future__ import annotations

import socket

import pytest

from tokentop import discover


def test_netlink_and_proc_see_the_same_listening_sockets() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_server(("::1", 0), family=socket.AF_INET6) as six,
    ):
        try:
            by_netlink = discover._listening_by_netlink()
        except OSError as exc:
            pytest.skip(f"no sock_diag netlink here ({exc}): the /proc fallback is what runs")
        by_proc = discover._listening_by_proc()
        assert by_proc is not None
        for port in (server.getsockname()[1], six.getsockname()[1]):
            assert by_netlink[port] == by_proc[port]
    assert discover._listening_inodes() is not None


def test_a_refused_netlink_falls_back_to_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> dict[int, str]:
        raise PermissionError("netlink refused")

    monkeypatch.setattr(discover, "_listening_by_netlink", refused)
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert server.getsockname()[1] in (discover._listening_inodes() or {})
