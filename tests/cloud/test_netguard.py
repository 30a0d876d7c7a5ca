"""SSRF guard (cloud/netguard.py) for feed URLs and webhooks: http(s) only; loopback, private, link-local,
metadata and other non-global addresses refused after DNS resolution and at connect time (DNS rebinding)."""
import socket

import pytest

from cloud import netguard
from tests.httpfixtures import feed_fixture


def H(token):
    return {"Authorization": f"Bearer {token}"}


PRIVATE = ["http://127.0.0.1/x.ics", "http://localhost:8080/x.ics", "http://[::1]/x.ics",
           "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/x.ics", "http://192.168.1.1/x.ics",
           "http://172.16.3.4/x.ics", "http://0.0.0.0/x.ics", "http://[::ffff:127.0.0.1]/x.ics",
           "http://2130706433/x.ics", "http://0x7f000001/x.ics", "http://100.64.0.1/x.ics", "http://[fd00::1]/x.ics",
           "http://[fe80::1]/x.ics", "http://224.0.0.1/x.ics", "http://[fd00:ec2::254]/latest/",
           # IPv6 forms carrying a private IPv4 (NAT64, 6to4, Teredo), IPv4-compatible, site-local
           "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "http://[64:ff9b::7f00:1]/x.ics",
           "http://[64:ff9b:1::a9fe:a9fe]/x.ics", "http://[2002:a9fe:a9fe::]/latest/", "http://[2002:7f00:1::1]/x.ics",
           "http://[2001:0:a9fe:a9fe::1]/x.ics", "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/x.ics",
           "http://[::7f00:1]/x.ics", "http://[::a9fe:a9fe]/x.ics", "http://[fec0::1]/x.ics"]


@pytest.mark.parametrize("url", PRIVATE)
def test_private_destinations_are_refused_when_saving_a_feed(client, api_token, make_agency, make_lock, url):
    ag = make_agency()
    lock_id = make_lock(ag)
    resp = client.put(f"/api/v1/locks/{lock_id}/calendar", headers=H(api_token(ag)), json={"url": url})
    assert resp.status_code == 400, url
    assert "not allowed" in resp.get_json()["message"] or "resolve" in resp.get_json()["message"]


@pytest.mark.parametrize("url", ["ftp://example.com/a.ics", "file:///etc/passwd", "gopher://example.com/",
                                 "javascript:alert(1)", "http:///nohost", "//example.com/a.ics"])
def test_only_http_and_https(url):
    with pytest.raises(netguard.Refused):
        netguard.check_url(url)


def test_public_addresses_pass():
    assert netguard.address_allowed("93.184.215.14") and netguard.address_allowed("2606:4700::1111")
    assert not netguard.address_allowed("::ffff:10.1.2.3")
    # the IPv6 forms of public IPv4 addresses pass as those do
    assert netguard.address_allowed("64:ff9b::808:808") and netguard.address_allowed("2002:808:808::1")
    for ip in ["64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::", "::7f00:1", "fec0::1", "64:ff9b:1::808:808"]:
        assert not netguard.address_allowed(ip), ip


def test_dns_rebinding_is_refused_at_connect_time(app, client, api_token, make_agency, make_lock, feed_server,
                                                  monkeypatch):
    """The name resolves to a public address when the feed is saved, to 127.0.0.1 when it is fetched: the
    fetch connects to nothing, the error is shown, and the local server never sees a request."""
    feed_server.documents["airbnb"] = feed_fixture("airbnb")
    real = socket.getaddrinfo
    answers = {"now": "93.184.215.14"}

    def fake(host, port, *args, **kwargs):
        if host == "feeds.rebind.example":
            return real(answers["now"], port, *args, **kwargs)
        return real(host, port, *args, **kwargs)
    monkeypatch.setattr(netguard.socket, "getaddrinfo", fake)
    ag = make_agency()
    t = api_token(ag)
    lock_id = make_lock(ag)
    url = f"http://feeds.rebind.example:{feed_server.server_port}/airbnb.ics"
    assert client.put(f"/api/v1/locks/{lock_id}/calendar", headers=H(t), json={"url": url}).status_code == 201
    answers["now"] = "127.0.0.1"
    from cloud.feeds.sync import sync_due
    with app.app_context():
        assert sync_due(every=True)["failed"] == 1
    st = client.get(f"/api/v1/locks/{lock_id}/calendar", headers=H(t)).get_json()
    assert "not allowed" in st["last_error"] and st["last_sync_at"] is None
    assert feed_server.hits("airbnb") == []


def test_a_redirect_to_a_private_address_is_refused(feed_server, monkeypatch):
    """Pretend 127.0.0.1 is public (the feed server's address); its redirect to 127.0.0.2 goes through the guard."""
    monkeypatch.setattr(netguard, "address_allowed", lambda ip: ip == "127.0.0.1")
    feed_server.documents["ok"] = feed_fixture("airbnb")
    assert netguard.request("GET", feed_server.url("ok")).status == 200
    feed_server.status["redir"] = 302
    import tests.httpfixtures as hf
    orig = hf._FeedHandler.do_GET

    def redirecting(self):
        if self.path.startswith("/redir"):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.2:{self.server.server_port}/ok.ics")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        orig(self)
    monkeypatch.setattr(hf._FeedHandler, "do_GET", redirecting)
    with pytest.raises(netguard.Refused):
        netguard.request("GET", feed_server.url("redir"))
    assert netguard.request("GET", feed_server.url("redir"), follow_redirects=False).status == 302


def test_the_timeout_is_a_deadline_for_the_whole_fetch(feed_server):
    """A server that sends its answer one byte at a time, each well within the timeout, is cut when the whole
    fetch has taken the timeout (a per-read timeout would wait for the last byte)."""
    import time
    feed_server.documents["slow"] = b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"  # 30 bytes, 0.25 s each
    feed_server.trickle_s = 0.25
    t0 = time.monotonic()
    with pytest.raises(netguard.FetchError, match="did not answer within 1 s"):
        netguard.request("GET", feed_server.url("slow"), timeout=1.0, allow_private=True)
    assert time.monotonic() - t0 < 2.0
    feed_server.trickle_s = 0.0
    assert netguard.request("GET", feed_server.url("slow"), timeout=1.0, allow_private=True).status == 200


def test_name_resolution_counts_in_the_deadline(feed_server, monkeypatch):
    import time
    real = socket.getaddrinfo

    def slow(host, port, *args, **kwargs):
        if host == "slow-dns.example":
            time.sleep(4)
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)
    monkeypatch.setattr(netguard.socket, "getaddrinfo", slow)
    feed_server.documents["ok"] = feed_fixture("airbnb")
    t0 = time.monotonic()
    with pytest.raises(netguard.FetchError, match="within 1 s"):
        netguard.request("GET", f"http://slow-dns.example:{feed_server.server_port}/ok.ics", timeout=1.0,
                         allow_private=True)
    assert time.monotonic() - t0 < 2.0


def test_an_answer_over_the_limit_is_refused_or_cut(feed_server):
    feed_server.documents["big"] = b"x" * 5000
    with pytest.raises(netguard.FetchError, match="larger than 4 KiB"):
        netguard.request("GET", feed_server.url("big"), max_bytes=4096, allow_private=True)
    resp = netguard.request("GET", feed_server.url("big"), max_bytes=4096, allow_private=True, truncate=True)
    assert resp.status == 200 and len(resp.body) == 4096
