// Supervisor wall: one line per live call of the cluster (WS /ws/wall?token=WALL_TOKEN).
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const proto = location.protocol === "https:" ? "wss" : "ws";
const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(100 * x)}%`);
const cell = (text) => { const td = document.createElement("td"); td.textContent = text; return td; };
const mins = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

const ws = new WebSocket(`${proto}://${location.host}/ws/wall?token=${encodeURIComponent(params.get("token") || "")}`);
ws.onclose = (e) => { $("status").textContent = `disconnected (${e.code}${e.reason ? ": " + e.reason : ""})`; };
ws.onmessage = (msg) => {
  const ev = JSON.parse(msg.data);
  if (ev.type !== "wall") return;
  const rows = ev.calls.map((c) => {
    const tr = document.createElement("tr");
    const people = c.faces.map((f) => `${f.name}: ${f.dominant.label ?? "–"} ${pct(f.dominant.share)}, speaks ${pct(f.talk_share)}`);
    tr.append(
      cell(`${c.session.slice(0, 6)} · ${mins(c.duration_s)}`),
      cell(c.worker),
      cell(c.purpose || "–"),
      cell(people.join(" · ") || "no faces yet"),
      cell(c.dominant ? `${c.dominant.label} ${pct(c.dominant.share)}` : "–"),
      cell(pct(c.speech_share)),
      cell(c.attention ? `${c.attention.looking} of ${c.attention.faces}` : "–"),
      cell(c.via || "–"),
    );
    return tr;
  });
  document.querySelector("#calls tbody").replaceChildren(...rows);
  $("status").textContent = `${ev.calls.length} live call(s) · ${new Date(ev.ts * 1000).toLocaleTimeString()}`;
};
