// Publisher page: consent first, then camera -> WebRTC -> server; events drive the overlay.
import { Overlay, metricsText } from "./overlay.js";

const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };

$("consent-check").addEventListener("change", (e) => { $("start").disabled = !e.target.checked; });
$("start").addEventListener("click", () => start().catch((err) => {
  $("consent-error").textContent = `Could not start: ${err.message || err}`;
  status("stopped");
}));

async function waitIceComplete(pc) {
  // aiortc takes no trickled candidates: send the offer once gathering is complete.
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", check); resolve(); } };
    pc.addEventListener("icegatheringstatechange", check);
  });
}

async function getMedia() {
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };
  // Raw audio: echo cancellation, noise suppression and auto-gain reshape the voice.
  const audio = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio });
  } catch (err) {
    return await navigator.mediaDevices.getUserMedia({ video });  // no microphone: video only
  }
}

// What the server analyses (session.started "send": at most max_fps frames per second, or
// max_fps_with_audio while a microphone is sent too, the longer side at most max_side pixels):
// more would cost this device's encoder, the uplink and the server's decoder, to be dropped.
async function limitVideo(track, sender, send, withAudio) {
  let fps = null, scale = 1;
  if (send && track.readyState === "live") {
    const side = send.max_side, now = track.getSettings();
    fps = (withAudio && send.max_fps_with_audio) || send.max_fps;
    const ask = { ...track.getConstraints(), frameRate: { ideal: fps, max: fps } };
    const long = Math.max(now.width || 0, now.height || 0);
    if (long > side) {  // the camera scales down keeping its shape (ideal: never refused)
      ask.width = { ideal: Math.round(now.width * side / long) };
      ask.height = { ideal: Math.round(now.height * side / long) };
    }
    try { await track.applyConstraints(ask); } catch (err) { /* the encoder limits below hold */ }
    const got = track.getSettings();  // the encoder scales what the camera still sends too big
    const sent = Math.max(got.width || 0, got.height || 0);
    scale = sent > side ? sent / side : 1;
  }
  const params = sender.getParameters();
  params.degradationPreference = "maintain-resolution";  // faces need pixels more than frames
  if (fps !== null) {
    if (!params.encodings || !params.encodings.length) params.encodings = [{}];
    params.encodings[0].maxFramerate = fps;
    params.encodings[0].scaleResolutionDownBy = scale;
  }
  await sender.setParameters(params).catch(() => {});
  const got = track.getSettings();
  return { width: Math.round(got.width / scale), height: Math.round(got.height / scale), fps };
}

async function start() {
  if (!$("consent-check").checked) throw new Error("consent is required");
  $("start").disabled = true;
  status("starting camera…");
  const stream = await getMedia();
  $("consent").classList.add("hidden");
  $("live").classList.remove("hidden");
  document.body.classList.add("running");  // one screen: video and panel fit the viewport
  $("video").srcObject = stream;
  const shape = (e) => {
    const v = e.target;  // the stage takes the camera's shape where the layout lets it
    if (v.videoWidth) v.parentElement.style.setProperty("--ar", `${v.videoWidth} / ${v.videoHeight}`);
  };
  $("video").addEventListener("loadedmetadata", shape);
  $("video").addEventListener("resize", shape);  // the camera changed resolution
  // The video sender, what the server asked for (session.started) and the limits applied so
  // far: applied again, one after the other, whenever the camera changes resolution.
  const video = { track: stream.getVideoTracks()[0], sender: null, asked: null, done: Promise.resolve() };
  const limit = () => {
    video.done = video.done.then(() => limitVideo(video.track, video.sender, video.asked,
      stream.getAudioTracks().some((t) => t.readyState === "live"))).then((s) => {
      if (s.fps !== null) $("sending").textContent = `Sending ${s.width}×${s.height} at up to ${s.fps} fps (what the server analyses)`;
    }).catch(() => {});  // a closed connection: nothing to limit; later calls still run
    return video.done;
  };
  $("video").addEventListener("resize", () => { if (video.sender) limit(); });

  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws`);
  const send = (msg) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); };
  const overlay = new Overlay($("overlay"), $("faces"), send, $("video"));
  window.emotionStream = { overlay, ws, pc: null };  // for tests and debugging
  $("reset").onclick = () => send({ type: "reset" });
  let pc = null;

  ws.onopen = () => send({ type: "hello", consent: true, purpose: $("purpose").value });
  ws.onclose = (e) => status(`disconnected (${e.code}${e.reason ? ": " + e.reason : ""})`);
  ws.onmessage = async (msg) => {
    const ev = JSON.parse(msg.data);
    if (ev.type === "session.started") {
      const link = new URL(`viewer.html?session=${ev.session}&token=${ev.viewer_token}`, location.href);
      $("share").innerHTML = `Viewer link (read-only, keep private): <a href="${link}" target="_blank">${link}</a>`;
      // The session's report so far (same writers as `emotion-stream analyze`), as downloads.
      const report = (fmt) => new URL(`report/${ev.session}.${fmt}?token=${ev.viewer_token}`, location.href);
      $("reports").innerHTML = "Report so far: " + ["html", "json", "csv"]
        .map((fmt) => `<a href="${report(fmt)}" download>${fmt.toUpperCase()}</a>`).join(" · ");
      video.asked = ev.send || null;
      pc = window.emotionStream.pc = new RTCPeerConnection({ iceServers: ev.ice_servers || [] });
      for (const track of stream.getTracks()) {
        const sender = pc.addTrack(track, stream);
        if (track === video.track) video.sender = sender;
      }
      if (video.sender) await limit();
      await pc.setLocalDescription(await pc.createOffer());
      await waitIceComplete(pc);
      send({ type: "offer", sdp: pc.localDescription.sdp });
      status("connecting…");
    } else if (ev.type === "answer") {
      await pc.setRemoteDescription({ type: "answer", sdp: ev.sdp });
      status("live");
    } else if (ev.type === "frame") {
      $("metrics").textContent = metricsText(ev.metrics);
      overlay.handle(ev);
    } else if (ev.type === "error" && ev.code === "redirect") {
      status(`this server is full; continuing at ${ev.url}`);  // cluster admission
      location.assign(ev.url);
    } else if (ev.type === "error") {
      status(`error: ${ev.message}`);
      overlay.handle(ev);
    } else {
      overlay.handle(ev);
    }
  };
}
