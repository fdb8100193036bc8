// Read-only viewer (agents, OBS browser source): overlay and panel of one session, no video.
import { Overlay, metricsText } from "./overlay.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const overlay = new Overlay($("overlay"), $("faces"), null);
window.emotionStream = { overlay };
const proto = location.protocol === "https:" ? "wss" : "ws";
const ws = new WebSocket(`${proto}://${location.host}/ws/view?session=${encodeURIComponent(params.get("session") || "")}&token=${encodeURIComponent(params.get("token") || "")}`);
ws.onopen = () => { $("status").textContent = "connected"; };
ws.onclose = (e) => { $("status").textContent = `disconnected (${e.code}${e.reason ? ": " + e.reason : ""})`; };
ws.onmessage = (msg) => {
  const ev = JSON.parse(msg.data);
  if (ev.type === "frame") {
    // The stage takes the frame's shape where the layout lets it (a phone held upright).
    document.querySelector(".stage").style.setProperty("--ar", `${ev.width} / ${ev.height}`);
    $("metrics").textContent = metricsText(ev.metrics);
  }
  if (ev.type === "session.started" && ev.purpose) $("status").textContent = `connected · purpose: ${ev.purpose}`;
  if (ev.type === "session.ended") $("status").textContent = `session ended (${ev.reason})`;
  overlay.handle(ev);
};
