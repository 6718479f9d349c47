"""ConnectionWatch: what the Twitch status says about the EventSub sockets twitchio holds (no twitchio, no timing)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.platforms.twitch.liveness import NO_SOCKET, RECONNECTING, ConnectionWatch


@dataclass(eq=False)
class FakeSocket:
    connected: bool = True


class Held:
    """The sockets twitchio holds, and every report the watch made."""

    def __init__(self, *sockets: FakeSocket) -> None:
        self.sockets = list(sockets)
        self.reports: list[tuple[bool, str]] = []
        self.watch = ConnectionWatch(
            lambda: self.sockets, lambda up, detail: self.reports.append((up, detail))
        )


def test_a_dropped_socket_is_reported_once_until_the_next_welcome() -> None:
    socket = FakeSocket()
    held = Held(socket)
    held.watch.check()
    assert held.reports == []  # nothing is claimed before Twitch's first welcome
    held.watch.welcomed()
    held.watch.check()
    assert held.reports == [(True, "")]
    socket.connected = False  # the outage: twitchio keeps the socket while it tries to replace it
    held.watch.check()
    held.watch.check()
    assert held.reports == [(True, ""), (False, RECONNECTING)] and not held.watch.up
    socket.connected = True
    held.watch.welcomed()
    assert held.reports[-1] == (True, "") and held.watch.up


def test_a_drop_repaired_between_two_checks_is_still_reported_by_its_close_event() -> None:
    socket = FakeSocket()
    held = Held(socket)
    held.watch.welcomed()
    held.watch.closed(socket)  # twitchio closes the old connection only once the new one is open
    assert held.reports == [(True, ""), (False, RECONNECTING)]
    held.watch.welcomed()
    assert held.reports[-1] == (True, "")


def test_a_socket_replaced_after_twitch_asked_to_move_is_no_loss() -> None:
    old, new = FakeSocket(), FakeSocket()
    held = Held(new)  # the new socket was welcomed and took the old one's place
    held.watch.welcomed()
    old.connected = False
    held.watch.closed(old)
    assert held.reports == [(True, "")] and held.watch.up


def test_no_socket_left_is_a_loss() -> None:
    socket = FakeSocket()
    held = Held(socket)
    held.watch.welcomed()
    held.sockets.clear()  # closed for good (Twitch closed it as unused), nothing replaces it
    held.watch.closed(socket)
    assert held.reports == [(True, ""), (False, NO_SOCKET)]


def test_one_lost_socket_among_several_is_a_loss() -> None:
    sockets = FakeSocket(), FakeSocket(connected=False)
    held = Held(*sockets)
    held.watch.welcomed()
    held.watch.check()
    assert held.reports[-1] == (False, RECONNECTING)
