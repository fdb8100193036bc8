// Overlay and side panel shared by the publisher page and the read-only viewer.
// Renders `frame`, `face.summary`, `face.renamed` and `face.excluded` events (schema v1).

export const LABEL_COLOURS = {
  neutral: "#9e9e9e", happiness: "#f4b400", sadness: "#4285f4", surprise: "#ab47bc",
  fear: "#00897b", disgust: "#7cb342", anger: "#db4437", contempt: "#8d6e63", uncertain: "#5f6368",
};
const HISTORY_S = 60;

/** A stable, distinct colour per face ID. */
export function faceColour(id) {
  return `hsl(${Math.round((id * 137.508) % 360)}, 80%, 60%)`;
}

export class Overlay {
  /**
   * @param {HTMLCanvasElement} canvas drawn over the video (or alone, for viewers)
   * @param {HTMLElement} panel where the per-face cards go
   * @param {null | ((msg: object) => void)} send command sender; null = read-only
   */
  constructor(canvas, panel, send = null) {
    this.canvas = canvas;
    this.panel = panel;
    this.send = send;
    this.faces = new Map(); // id -> {name, excluded, history: [{t, label, conf}], dominant, card}
    this.lastFrame = null;
    this.speakers = new Map(); // audio track id -> {face_id, name, speaking, prosody, el}
  }

  handle(ev) {
    switch (ev.type) {
      case "frame": this.frame(ev); break;
      case "face.summary":
      case "session.summary":
        for (const f of ev.faces) {
          const s = this.face(f.id);
          s.dominant = f.dominant;
          s.visible = f.visible_s;
          s.name = f.name;
          this.updateCard(f.id);
        }
        break;
      case "face.renamed": this.face(ev.id).name = ev.name; this.updateCard(ev.id); this.draw(); break;
      case "face.excluded": this.face(ev.id).excluded = ev.excluded; this.updateCard(ev.id); break;
      case "session.reset":
        this.faces.clear(); this.panel.replaceChildren(); this.lastFrame = null;
        this.speakers.clear(); this.draw(); break;
      case "prosody": this.prosody(ev); break;
      case "speaker.active": {
        const sp = this.speaker(ev.speaker);
        sp.face_id = ev.face_id; sp.speaking = ev.speaking; sp.confidence = ev.confidence;
        this.updateSpeaker(ev.speaker); this.draw(); break;
      }
    }
  }

  speaker(id) {
    if (!this.speakers.has(id)) this.speakers.set(id, { face_id: null, speaking: false, prosody: null, el: null });
    return this.speakers.get(id);
  }

  prosody(ev) {
    const sp = this.speaker(ev.speaker);
    sp.prosody = ev; sp.face_id = ev.face_id; sp.speaking = ev.speaking;
    this.updateSpeaker(ev.speaker);
  }

  /** Face IDs currently matched as speaking. */
  speakingFaces() {
    const ids = new Set();
    for (const sp of this.speakers.values()) if (sp.speaking && sp.face_id != null) ids.add(sp.face_id);
    return ids;
  }

  updateSpeaker(id) {
    const sp = this.speaker(id);
    if (!sp.el) {
      sp.el = document.createElement("div");
      sp.el.className = "card speaker";
      sp.el.innerHTML = `<div class="who"></div>
        <div class="meter"><span>pitch</span><div class="bar"><span class="pitch"></span></div><b class="pv"></b></div>
        <div class="meter"><span>energy</span><div class="bar"><span class="energy"></span></div><b class="ev"></b></div>
        <div class="muted detail"></div>`;
      this.panel.prepend(sp.el);
    }
    const p = sp.prosody;
    const face = sp.face_id != null ? this.face(sp.face_id) : null;
    const who = sp.speaking
      ? (face ? `${face.name} is speaking` : "Someone not visible is speaking")
      : "Nobody is speaking";
    sp.el.querySelector(".who").textContent = `● ${who}`;
    sp.el.style.setProperty("--c", face ? faceColour(sp.face_id) : "#5f6368");
    if (p) {
      const hz = p.pitch.median_hz;
      sp.el.querySelector(".pitch").style.width = hz ? `${Math.min(100, Math.max(0, (Math.log2(hz / 60) / Math.log2(400 / 60)) * 100))}%` : "0";
      sp.el.querySelector(".pv").textContent = hz ? `${Math.round(hz)} Hz` : "–";
      sp.el.querySelector(".energy").style.width = `${Math.min(100, Math.max(0, (p.energy_dbfs + 60) / 60 * 100))}%`;
      sp.el.querySelector(".ev").textContent = `${Math.round(p.energy_dbfs)} dBFS`;
      const rate = p.speaking_rate_per_s != null ? `rate ${p.speaking_rate_per_s.toFixed(1)}/s · ` : "";
      const ar = p.vocal_arousal_heuristic != null ? ` · vocal arousal (heuristic) ${p.vocal_arousal_heuristic.toFixed(1)}` : "";
      sp.el.querySelector(".detail").textContent = `${rate}voice ${Math.round(p.voice_activity_ratio * 100)}% of ${p.window_s} s${ar}`;
    }
  }

  face(id) {
    if (!this.faces.has(id)) {
      this.faces.set(id, { name: `Face ${id}`, excluded: false, history: [], dominant: null, card: null });
    }
    return this.faces.get(id);
  }

  frame(ev) {
    this.lastFrame = ev;
    for (const f of ev.faces) {
      const s = this.face(f.id);
      s.name = f.name;
      s.excluded = f.excluded;
      s.current = f;
      if (!f.excluded) {
        s.history.push({ t: ev.media_t, label: f.label, conf: f.confidence });
        while (s.history.length && ev.media_t - s.history[0].t > HISTORY_S) s.history.shift();
      }
      this.updateCard(f.id);
    }
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const rect = c.getBoundingClientRect();
    const w = Math.max(1, Math.round(rect.width)), h = Math.max(1, Math.round(rect.height));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const ev = this.lastFrame;
    if (!ev) return;
    ctx.lineWidth = 3;
    ctx.font = "600 14px system-ui, sans-serif";
    for (const f of ev.faces) {
      const [x1, y1, x2, y2] = [f.box[0] * w, f.box[1] * h, f.box[2] * w, f.box[3] * h];
      const colour = f.excluded ? "#888" : faceColour(f.id);
      const speaking = !f.excluded && this.speakingFaces().has(f.id);
      ctx.lineWidth = speaking ? 6 : 3;
      ctx.strokeStyle = colour;
      ctx.setLineDash(f.excluded ? [6, 4] : []);
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.setLineDash([]);
      const text = (speaking ? "● " : "") + (f.excluded ? `${f.name} · excluded` : `${f.name} · ${f.label} ${Math.round(f.confidence * 100)}%`);
      const tw = ctx.measureText(text).width + 10;
      const ty = y1 > 24 ? y1 - 24 : y2;
      ctx.fillStyle = "rgba(0,0,0,.65)";
      ctx.fillRect(x1 - 1.5, ty, tw, 22);
      ctx.fillStyle = colour;
      ctx.fillText(text, x1 + 4, ty + 16);
      if (!f.excluded) {  // confidence bar under the box
        const bw = x2 - x1;
        ctx.fillStyle = "rgba(0,0,0,.5)";
        ctx.fillRect(x1, y2 + 2, bw, 6);
        ctx.fillStyle = LABEL_COLOURS[f.label] || colour;
        ctx.fillRect(x1, y2 + 2, bw * f.confidence, 6);
      }
    }
  }

  updateCard(id) {
    const s = this.face(id);
    if (!s.card) {
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.face = String(id);
      card.style.setProperty("--c", faceColour(id));
      card.innerHTML = `<header><span class="name"></span><span class="buttons"></span></header>
        <div class="label"></div><div class="bar"><span></span></div>
        <canvas width="300" height="36" title="last ${HISTORY_S} s: colour = shown expression, height = confidence"></canvas>
        <div class="dominant"></div>`;
      if (this.send) {
        const rename = document.createElement("button");
        rename.textContent = "Rename";
        rename.onclick = () => {
          const name = prompt(`Name for ${s.name}`, s.name);
          if (name && name.trim()) this.send({ type: "rename", id, name: name.trim().slice(0, 64) });
        };
        const exclude = document.createElement("button");
        exclude.className = "exclude";
        exclude.onclick = () => this.send({ type: "exclude", id, excluded: !s.excluded });
        card.querySelector(".buttons").append(rename, " ", exclude);
      }
      this.panel.append(card);
      s.card = card;
    }
    const card = s.card;
    card.classList.toggle("excluded", s.excluded);
    card.querySelector(".name").textContent = s.name;
    const ex = card.querySelector(".exclude");
    if (ex) ex.textContent = s.excluded ? "Include" : "Exclude";
    const f = s.current;
    const label = card.querySelector(".label");
    const bar = card.querySelector(".bar > span");
    if (s.excluded) {
      label.textContent = "excluded: no expression computed";
      bar.style.width = "0";
    } else if (f && f.label) {
      label.textContent = `${f.label} ${Math.round(f.confidence * 100)}%  ·  valence ${f.valence.toFixed(2)}, arousal ${f.arousal.toFixed(2)}${f.va_estimated ? " (est.)" : ""}`;
      bar.style.width = `${Math.round(f.confidence * 100)}%`;
      bar.style.background = LABEL_COLOURS[f.label];
    }
    if (s.dominant) {
      card.querySelector(".dominant").textContent =
        `dominant: ${s.dominant.label} ${(s.dominant.share * 100).toFixed(1)}% of ${(s.visible ?? 0).toFixed(1)} s`;
    }
    this.sparkline(card.querySelector("canvas"), s.history);
  }

  sparkline(canvas, history) {
    const ctx = canvas.getContext("2d");
    const { width: w, height: h } = canvas;
    ctx.clearRect(0, 0, w, h);
    if (!history.length) return;
    const t1 = history[history.length - 1].t, t0 = t1 - HISTORY_S;
    for (let i = 0; i < history.length; i++) {
      const p = history[i];
      const next = i + 1 < history.length ? history[i + 1].t : p.t + 0.1;
      const x = ((p.t - t0) / HISTORY_S) * w, xn = ((next - t0) / HISTORY_S) * w;
      ctx.fillStyle = LABEL_COLOURS[p.label] || "#888";
      ctx.fillRect(x, h - p.conf * h, Math.max(1, xn - x), p.conf * h);
    }
  }
}

/** Human-readable metrics line. */
export function metricsText(m) {
  return `${m.analysed_fps.toFixed(1)} analysed fps · latency ${Math.round(m.latency_ms)} ms · ` +
    `dropped ${m.dropped_frames}/${m.received_frames} · detect every ${m.detect_every}`;
}
