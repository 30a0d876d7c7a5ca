# Virtual keypad page for the simulated lock (simulator and demo only: lives in sim/demo/, never
# bundled for a real lock). Served by the simulated lock itself through microdot, on the unix port.
#
# Injected collaborators:
#   down(key) / up(key)   press and release a key on the simulated board (its fake matrix pins), so the
#                         firmware's real keypad scan sees it
#   state() -> dict       what the page shows live, e.g. {"door": "open"|"closed", "led": bool,
#                         "buzzer": bool, "mac": ..., "cloud": ...}; polled by the page as /state.json
# A press is held for hold_ms, then released and followed by gap_ms, one key at a time, in order.

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio  # type: ignore

from microdot import Microdot, Response

KEYS = "123456789*0#"

_PAGE = """<!doctype html><html><head><meta charset=utf-8>
<meta name=viewport content='width=device-width,initial-scale=1'><title>KeyDrop lock %(mac)s</title>
<style>
body{font-family:sans-serif;max-width:22em;margin:1em auto;padding:0 1em;text-align:center}
#pad{display:grid;grid-template-columns:repeat(3,1fr);gap:.5em;margin:1em 0}
#pad button{font-size:1.6em;padding:.5em 0;border-radius:.3em;border:1px solid #888;background:#f4f4f4}
#pad button:active{background:#ddd}
#door{font-size:1.4em;padding:.5em;border-radius:.3em;background:#eee}
#door.open{background:#8d8}#door.closed{background:#ddd}
#entry{font-size:1.6em;letter-spacing:.3em;min-height:1.2em;margin:.4em 0}
.dot{display:inline-block;width:1em;height:1em;border-radius:50%%;background:#555;vertical-align:middle}
.dot.on{background:#3c3}.dot.buzz{background:#e80}
small{color:#666}
</style></head><body>
<h1>Lock <code id=mac>%(mac)s</code></h1>
<div id=door class=closed data-state=closed>Door closed</div>
<p id=entry aria-label='digits typed'>&nbsp;</p>
<p>LED <span id=led class=dot></span> &nbsp; Buzzer <span id=buzzer class=dot></span></p>
<div id=pad>%(buttons)s</div>
<p><small id=info></small></p>
<script>
var chain=Promise.resolve();
function press(k){chain=chain.then(function(){return fetch('/press',{method:'POST',
 headers:{'Content-Type':'application/x-www-form-urlencoded'},body:'key='+encodeURIComponent(k)});});}
document.querySelectorAll('#pad button').forEach(function(b){
 b.addEventListener('click',function(){press(b.dataset.key);});});
function show(s){var d=document.getElementById('door');var open=s.door==='open';
 d.className=open?'open':'closed';d.dataset.state=open?'open':'closed';
 d.textContent=open?'Door open':'Door closed';
 document.getElementById('led').className='dot'+(s.led?' on':'');
 document.getElementById('buzzer').className='dot'+(s.buzzer?' buzz':'');
 var n=s.digits||0;document.getElementById('entry').textContent=n?'\u2022'.repeat(n):'\u00a0';
 var i=[];if('codes' in s)i.push(s.codes+' code(s) on the lock');
 if('trusted_time' in s)i.push(s.trusted_time?'trusted time':'no trusted time yet');
 if(s.locked_out_s)i.push('locked out '+s.locked_out_s+' s');
 document.getElementById('info').textContent=i.join(' \\u00b7 ');}
function poll(){fetch('/state.json').then(function(r){return r.json();}).then(show)
 .catch(function(){}).then(function(){setTimeout(poll,200);});}
poll();
</script></body></html>"""


def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


class KeypadPage:
    def __init__(self, down, up, state, hold_ms=80, gap_ms=60):
        self.down = down
        self.up = up
        self.state = state
        self.hold_ms = hold_ms
        self.gap_ms = gap_ms
        self.lock = asyncio.Lock()
        self.app = app = Microdot()

        @app.route("/")
        async def index(req):
            buttons = "".join("<button type=button data-key='%s' id='key-%s'>%s</button>"
                              % (k, "star" if k == "*" else "hash" if k == "#" else k, k) for k in KEYS)
            st = self.state()
            return Response(_PAGE % {"mac": _esc(st.get("mac", "")), "buttons": buttons}, 200,
                            {"Content-Type": "text/html; charset=UTF-8", "Cache-Control": "no-store"})

        @app.route("/state.json")
        async def state_json(req):
            return Response(self.state(), 200, {"Cache-Control": "no-store"})

        @app.route("/press", methods=["POST"])
        async def press(req):
            form = req.form
            key = form.get("key") if form else None
            if not key or key not in KEYS or len(key) != 1:
                return {"error": "key must be one of " + KEYS}, 400
            await self.press(key)
            return self.state()

    async def press(self, key):
        async with self.lock:
            self.down(key)
            try:
                await asyncio.sleep_ms(self.hold_ms)
            finally:
                self.up(key)
            await asyncio.sleep_ms(self.gap_ms)

    async def serve(self, host="127.0.0.1", port=8081):
        await self.app.start_server(host=host, port=port)
