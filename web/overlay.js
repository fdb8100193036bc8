// Overlay and side panel shared by the publisher page and the read-only viewer.
// Renders `frame`, `face.summary`, `face.renamed` and `face.excluded` events (schema v1).

/** Short names of the AU-named facial actions for the cards (full names in the tooltip). */
/** Speaking reports in a row (0.25 s each) with one mouth match before a voice joins that face's card. */
const LINK_HOPS = 4;
const SHORT_AU = {
  AU12_smile: "smile", AU26_jaw_drop: "jaw drop", AU5_upper_lid_raise: "lids up",
  AU2_outer_brow_raise: "brows up", AU1_inner_brow_raise: "inner brows", AU4_brow_lower: "brows down",
  AU15_lip_corner_depress: "lips down", AU45_blink: "blink",
};

export const LABEL_COLOURS = {
  neutral: "#9e9e9e", happiness: "#f4b400", sadness: "#4285f4", surprise: "#ab47bc",
  fear: "#00897b", disgust: "#7cb342", anger: "#db4437", contempt: "#8d6e63", uncertain: "#5f6368",
};
const HISTORY_S = 60;
/** How long "nodding" / "shaking head" stays under a face after its gesture event. */
const GESTURE_SHOW_MS = 1500;

/**
 * Behaviour words for a face (never states of mind): "looking away", "nodding", "shaking head",
 * "leaning in"; `s` is the face's state (gesture, last posture), `f` its frame entry.
 */
export function behaviourWords(f, s, now = performance.now()) {
  const words = [];
  if (f.looking_away) words.push("looking away");
  if (s && s.gesture && now < s.gesture.until) words.push(s.gesture.kind === "nod" ? "nodding" : "shaking head");
  const lean = s && s.posture ? s.posture.lean : null;
  if (lean != null && lean > 0.1) words.push("leaning in");
  return words;
}
/**
 * A face's behaviour in words and degrees for its card: where the head points, toward the screen
 * or away, gestures, upper body ("not visible" rather than a guess). Behaviour, never a state of mind.
 */
export function behaviourLine(f, s, now = performance.now()) {
  if (!f || (!f.head && f.attention == null && !(s && s.posture))) return "";
  const parts = [];
  const deg = (v) => `${v >= 0 ? "+" : "−"}${Math.abs(Math.round(v))}°`;
  if (f.head) parts.push(`head yaw ${deg(f.head.yaw)}, pitch ${deg(f.head.pitch)}`);
  if (f.attention != null) parts.push(f.looking_away ? "looking away" : "looking toward the screen");
  if (s && s.gesture && now < s.gesture.until) parts.push(s.gesture.kind === "nod" ? "nodding" : "shaking head");
  const p = s && s.posture;
  if (p) {
    if (!p.visible) parts.push("upper body not visible");
    else {
      if (p.lean != null) parts.push(p.lean > 0.1 ? "leaning in" : p.lean < -0.1 ? "leaning back" : "upright");
      if (p.shoulders_raised) parts.push("shoulders raised");
      if (p.hand_to_face) parts.push("hand at the face");
    }
  }
  return parts.join(" · ");
}
/** Uncertain share from which headlines name it next to the dominant label (README: Definitions). */
export const UNCERTAIN_NOTE = 0.2;

/** "neutral 11% · uncertain 79%": the dominant label, and the uncertain share when it is large. */
export function headline(dominant, shares) {
  if (!dominant) return "";
  const u = dominant.uncertain_share ?? (shares ? shares.uncertain : 0) ?? 0;
  const main = `${dominant.label} ${Math.round(dominant.share * 100)}%`;
  return dominant.label !== "uncertain" && u >= UNCERTAIN_NOTE ? `${main} · uncertain ${Math.round(u * 100)}%` : main;
}

/**
 * Where a frame of `fw`×`fh` pixels is painted inside a box of `bw`×`bh` CSS pixels, for a CSS
 * `object-fit` (`contain` letterboxes, `cover` crops, `fill` stretches, `none`/`scale-down`).
 * @returns {{x: number, y: number, w: number, h: number}} relative to the box
 */
export function contentRect(bw, bh, fw, fh, fit = "contain") {
  if (!(fw > 0 && fh > 0)) return { x: 0, y: 0, w: bw, h: bh };
  if (fit === "fill") return { x: 0, y: 0, w: bw, h: bh };
  let s = fit === "cover" ? Math.max(bw / fw, bh / fh) : Math.min(bw / fw, bh / fh);
  if (fit === "none") s = 1;
  if (fit === "scale-down") s = Math.min(1, s);
  const w = fw * s, h = fh * s;
  return { x: (bw - w) / 2, y: (bh - h) / 2, w, h };  // object-position: 50% 50% (default)
}

/** A stable, distinct colour per face ID. */
export function faceColour(id) {
  return `hsl(${Math.round((id * 137.508) % 360)}, 80%, 60%)`;
}

export class Overlay {
  /**
   * @param {HTMLCanvasElement} canvas drawn over the video (or alone, for viewers)
   * @param {HTMLElement} panel where the per-face cards go
   * @param {null | ((msg: object) => void)} send command sender; null = read-only
   * @param {HTMLVideoElement | null} video the video the boxes go on (null: viewer, no video)
   */
  constructor(canvas, panel, send = null, video = null) {
    this.canvas = canvas;
    this.panel = panel;
    this.send = send;
    this.video = video;
    this.rects = [];  // the boxes last drawn, in page CSS pixels (for tests)
    this.videoRect = null;  // where the frame is painted, in page CSS pixels
    // The canvas follows the video (or its own box) whenever either changes size.
    const redraw = () => this.draw();
    if (typeof ResizeObserver !== "undefined") {
      this.resizer = new ResizeObserver(redraw);
      this.resizer.observe(video || canvas);
    }
    if (video) { video.addEventListener("resize", redraw); video.addEventListener("loadedmetadata", redraw); }
    window.addEventListener("resize", redraw);
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
          s.shares = f.shares;
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
      case "gesture": {  // a nod or head shake just ended: named under the box for a moment
        this.face(ev.face).gesture = { kind: ev.gesture, until: performance.now() + GESTURE_SHOW_MS };
        this.draw(); break;
      }
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
    // The face this voice belongs to, kept through silences: the diarized link, else a mouth
    // match held for LINK_HOPS speaking reports in a row (one noisy match does not link).
    sp.run = ev.speaking && ev.face_id != null && ev.face_id === sp.runFace ? (sp.run || 0) + 1 : 1;
    sp.runFace = ev.speaking ? ev.face_id : null;
    const linked = ev.voice_face_id ?? (sp.runFace != null && sp.run >= LINK_HOPS ? sp.runFace : null);
    if (linked != null) sp.linked = linked;
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
      sp.el.dataset.speaker = String(id);
      sp.el.innerHTML = `<div class="who"></div>
        <div class="meter"><span>pitch</span><div class="bar"><span class="pitch"></span></div><b class="pv"></b></div>
        <div class="meter"><span>energy</span><div class="bar"><span class="energy"></span></div><b class="ev"></b></div>
        <div class="meter" title="estimated vocal activation: how energised the voice sounds, -1 calm .. +1 activated (not an emotion)"><span>activation</span><div class="bar"><span class="vact"></span></div><b class="av"></b></div>
        <div class="muted detail"></div>`;
      this.panel.prepend(sp.el);
    }
    // One person, two channels: a voice linked to a face lives inside that face's card.
    const owner = sp.linked != null ? this.face(sp.linked) : null;
    if (owner && !owner.card) this.updateCard(sp.linked);
    const home = owner ? owner.card.querySelector(".voice") : this.panel;
    if (sp.el.parentElement !== home) {
      sp.el.classList.toggle("linked", !!owner);
      if (owner) home.replaceChildren(sp.el); else this.panel.prepend(sp.el);
    }
    const p = sp.prosody;
    const face = sp.face_id != null ? this.face(sp.face_id) : null;
    // "Now" is the latest voice decision; the detail line covers the whole prosody window.
    const who = owner
      ? (sp.speaking ? "voice: speaking" : "voice: not speaking now")
      : sp.speaking
        ? (face ? `${face.name} is speaking` : "Someone not visible is speaking")
        : "Nobody is speaking now";
    sp.el.querySelector(".who").textContent = `● ${who}`;
    sp.el.style.setProperty("--c", face ? faceColour(sp.face_id) : "#5f6368");
    if (p) {
      const hz = p.pitch.median_hz;
      sp.el.querySelector(".pitch").style.width = hz ? `${Math.min(100, Math.max(0, (Math.log2(hz / 60) / Math.log2(400 / 60)) * 100))}%` : "0";
      sp.el.querySelector(".pv").textContent = hz ? `${Math.round(hz)} Hz` : "–";
      sp.el.querySelector(".energy").style.width = `${Math.min(100, Math.max(0, (p.energy_dbfs + 60) / 60 * 100))}%`;
      sp.el.querySelector(".ev").textContent = `${Math.round(p.energy_dbfs)} dBFS`;
      const rate = p.speaking_rate_per_s != null ? `rate ${p.speaking_rate_per_s.toFixed(1)}/s · ` : "";
      const act = p.estimated_vocal_activation;
      sp.el.querySelector(".vact").style.width = act != null ? `${Math.round((act + 1) * 50)}%` : "0";
      sp.el.querySelector(".av").textContent = act != null ? `${act >= 0 ? "+" : ""}${act.toFixed(2)}` : "–";
      const ar = act != null ? ` · estimated vocal activation ${act >= 0 ? "+" : ""}${act.toFixed(2)}` : "";
      sp.el.querySelector(".detail").textContent = `${rate}speech in ${Math.round(p.voice_activity_ratio * 100)}% of the last ${p.window_s} s${ar}`;
      // In a face's closed row the meters are hidden: its one voice line carries pitch and
      // activation.
      const pitch = hz ? ` · ${Math.round(hz)} Hz` : "";
      if (owner) sp.el.querySelector(".who").textContent = `● ${who}${pitch}${ar}`;
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
      if (f.posture) s.posture = f.posture;  // posture runs a few times a second: it stands until then
      if (!f.excluded) {
        s.history.push({ t: ev.media_t, label: f.label, conf: f.confidence });
        while (s.history.length && ev.media_t - s.history[0].t > HISTORY_S) s.history.shift();
      }
      this.updateCard(f.id);
    }
    this.draw();
  }

  /** Size and place the canvas; returns [css width, css height, frame rect in canvas px]. */
  layout() {
    const c = this.canvas, v = this.video, ev = this.lastFrame;
    let bw, bh, frame;
    if (v) {
      // Cover exactly the video element's box, wherever the layout puts it.
      const vr = v.getBoundingClientRect();  // fractional sizes: clientWidth/Height round
      bw = vr.width; bh = vr.height;
      Object.assign(c.style, { left: `${v.offsetLeft}px`, top: `${v.offsetTop}px`, width: `${bw}px`, height: `${bh}px` });
      const fit = getComputedStyle(v).objectFit || "contain";
      frame = contentRect(bw, bh, v.videoWidth || (ev && ev.width), v.videoHeight || (ev && ev.height), fit);
    } else {
      const r = c.getBoundingClientRect();
      bw = r.width; bh = r.height;
      frame = ev ? contentRect(bw, bh, ev.width, ev.height, "contain") : { x: 0, y: 0, w: bw, h: bh };
    }
    const dpr = window.devicePixelRatio || 1;
    const pw = Math.max(1, Math.round(bw * dpr)), ph = Math.max(1, Math.round(bh * dpr));
    if (c.width !== pw || c.height !== ph) { c.width = pw; c.height = ph; }
    return [bw, bh, frame, dpr];
  }

  draw() {
    const c = this.canvas;
    const [bw, bh, fr, dpr] = this.layout();
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);  // draw in CSS pixels, sharp at any pixel ratio
    ctx.clearRect(0, 0, bw, bh);
    const page = c.getBoundingClientRect();
    const ox = page.left + window.scrollX, oy = page.top + window.scrollY;
    this.videoRect = { x: ox + fr.x, y: oy + fr.y, w: fr.w, h: fr.h };
    this.rects = [];
    if (!this.video) {  // viewer: no video under the boxes, so outline where the frame is
      ctx.fillStyle = "#000";
      ctx.fillRect(fr.x, fr.y, fr.w, fr.h);
      ctx.strokeStyle = "#5f6368"; ctx.lineWidth = 1; ctx.setLineDash([]);
      ctx.strokeRect(fr.x + 0.5, fr.y + 0.5, fr.w - 1, fr.h - 1);
    }
    const ev = this.lastFrame;
    publishRects(this);
    if (!ev) return;
    ctx.save();
    ctx.beginPath(); ctx.rect(fr.x, fr.y, fr.w, fr.h); ctx.clip();  // nothing outside the frame
    // Labels scale with the painted frame (a phone shows a 9-face gallery in 370 px).
    const fs = Math.max(9, Math.min(14, fr.w / 55)), lh = Math.round(fs * 1.6);
    ctx.font = `600 ${fs.toFixed(1)}px system-ui, sans-serif`;
    const speakingIds = this.speakingFaces();
    for (const f of ev.faces) {
      const x1 = fr.x + f.box[0] * fr.w, y1 = fr.y + f.box[1] * fr.h;
      const x2 = fr.x + f.box[2] * fr.w, y2 = fr.y + f.box[3] * fr.h;
      this.rects.push({ id: f.id, x: ox + x1, y: oy + y1, w: x2 - x1, h: y2 - y1 });
      const colour = f.excluded ? "#888" : faceColour(f.id);
      const speaking = !f.excluded && speakingIds.has(f.id);
      ctx.lineWidth = (speaking ? 6 : 3) * Math.max(0.6, fs / 14);
      ctx.strokeStyle = colour;
      ctx.setLineDash(f.excluded ? [6, 4] : []);
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.setLineDash([]);
      const expr = `${f.label} ${Math.round(f.confidence * 100)}%`;
      let text = (speaking ? "● " : "") + (f.excluded ? `${f.name} · excluded` : `${f.name} · ${expr}`);
      // Where the full label would run far past a small box, the box's colour names the face
      // (as its row in the panel does) and the label keeps the expression and its confidence.
      if (!f.excluded && ctx.measureText(text).width > Math.max(1.6 * (x2 - x1), 90)) {
        text = (speaking ? "● " : "") + expr;
      }
      const tw = ctx.measureText(text).width + 2 * Math.round(fs / 3);
      // The label sits above the box, or inside its top edge when there is no room above.
      const ty = y1 - lh - 2 >= fr.y ? y1 - lh - 2 : y1 + 2;
      const tx = Math.max(fr.x, Math.min(x1 - 1.5, fr.x + fr.w - tw));
      ctx.fillStyle = "rgba(0,0,0,.65)";
      ctx.fillRect(tx, ty, tw, lh);
      ctx.fillStyle = colour;
      ctx.fillText(text, tx + Math.round(fs / 3), ty + lh * 0.72);
      if (!f.excluded) {  // confidence bar under the box
        const bw2 = x2 - x1;
        const by = y2 + 8 <= fr.y + fr.h ? y2 + 2 : y2 - 8;
        ctx.fillStyle = "rgba(0,0,0,.5)";
        ctx.fillRect(x1, by, bw2, 6);
        ctx.fillStyle = LABEL_COLOURS[f.label] || colour;
        ctx.fillRect(x1, by, bw2 * f.confidence, 6);
        if (f.head) this.drawBehaviour(ctx, f, x1, y1, x2, y2, fs, fr, ty >= y1 ? ty + lh - y1 : 0);
      }
    }
    ctx.restore();
    publishRects(this);
  }

  /**
   * Head-direction tick from the box centre (yaw right, pitch up; half the box width at 90°),
   * an attention mark in the box's top-right corner (filled: toward the camera, hollow: away),
   * and behaviour words inside the box's bottom edge; `below` moves the mark under a label drawn
   * inside the box's top edge.
   */
  drawBehaviour(ctx, f, x1, y1, x2, y2, fs, fr, below = 0) {
    const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2, L = 0.5 * (x2 - x1);
    const rad = Math.PI / 180;
    const dx = Math.sin(f.head.yaw * rad) * L, dy = -Math.sin(f.head.pitch * rad) * L;
    ctx.lineWidth = 2;
    ctx.strokeStyle = "rgba(0,0,0,.6)";
    ctx.beginPath(); ctx.moveTo(cx, cy); ctx.lineTo(cx + dx, cy + dy); ctx.stroke();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.beginPath(); ctx.arc(cx, cy, 2, 0, 2 * Math.PI); ctx.moveTo(cx, cy); ctx.lineTo(cx + dx, cy + dy); ctx.stroke();
    const r = Math.max(3, Math.min(6, (x2 - x1) / 16));
    const mx = x2 - r - 4, my = y1 + below + r + 4;
    ctx.beginPath(); ctx.arc(mx, my, r, 0, 2 * Math.PI);
    ctx.lineWidth = 2; ctx.strokeStyle = "rgba(0,0,0,.7)"; ctx.stroke();
    ctx.lineWidth = 1.5; ctx.strokeStyle = "#fff";
    if ((f.attention ?? 1) >= 0.5) { ctx.fillStyle = "#66bb6a"; ctx.fill(); }
    ctx.stroke();
    const words = behaviourWords(f, this.faces.get(f.id));
    if (!words.length) return;
    const text = words.join(" · ");
    const small = Math.max(8, fs - 2), pad = Math.round(small / 3), h = Math.round(small * 1.5);
    ctx.font = `500 ${small.toFixed(1)}px system-ui, sans-serif`;
    const tw = ctx.measureText(text).width + 2 * pad;
    const ty = y2 - h - 3;  // inside the box's bottom edge: clear of the next row's labels
    const tx = Math.max(fr.x, Math.min(x1, fr.x + fr.w - tw));
    ctx.fillStyle = "rgba(0,0,0,.65)"; ctx.fillRect(tx, ty, tw, h);
    ctx.fillStyle = "#fff"; ctx.fillText(text, tx + pad, ty + h * 0.72);
    ctx.font = `600 ${fs.toFixed(1)}px system-ui, sans-serif`;
  }

  updateCard(id) {
    const s = this.face(id);
    if (!s.card) {
      // One compact row per face (name, expression, confidence); a click opens the details.
      const card = document.createElement("div");
      card.className = "card face";
      card.dataset.face = String(id);
      card.style.setProperty("--c", faceColour(id));
      card.innerHTML = `<div class="row" role="button" tabindex="0" aria-expanded="false">
          <span class="name"></span><span class="label"></span><span class="toggle" aria-hidden="true">▸</span>
          <div class="bar"><span></span></div></div>
        <div class="details"><div class="va"></div><div class="behaviour" title="behaviour: where the head points and the body is, not a state of mind"></div>
        <canvas width="300" height="30" title="last ${HISTORY_S} s: colour = shown expression, height = confidence"></canvas>
        <div class="dominant"></div><div class="actions" title="facial actions (blendshape scores, 0-1; AU names where the mapping is established)"></div>
        <div class="buttons"></div></div><div class="voice"></div>`;
      const row = card.querySelector(".row");
      const toggle = () => {
        const open = card.classList.toggle("open");
        row.setAttribute("aria-expanded", String(open));
        if (open) {
          this.sparkline(card.querySelector("canvas"), s.history);
          card.querySelector(".behaviour").textContent = s.excluded ? "" : behaviourLine(s.current, s);
        }
      };
      row.addEventListener("click", toggle);
      row.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); } });
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
      // Cards stay in face order (Face 1, 2, 3...) whatever order faces appear in.
      const after = [...this.panel.querySelectorAll(":scope > [data-face]")]
        .find((el) => Number(el.dataset.face) > id);
      this.panel.insertBefore(card, after || null);
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
      label.textContent = "excluded";
      label.title = "excluded: no expression computed";
      bar.style.width = "0";
    } else if (f && f.label) {
      label.textContent = `${f.label} ${Math.round(f.confidence * 100)}%`;
      label.title = "shown expression and its confidence (not a feeling)";
      card.querySelector(".va").textContent = `valence ${f.valence.toFixed(2)}, arousal ${f.arousal.toFixed(2)}${f.va_estimated ? " (est.)" : ""}`;
      bar.style.width = `${Math.round(f.confidence * 100)}%`;
      bar.style.background = LABEL_COLOURS[f.label];
    }
    const open = card.classList.contains("open");
    if (open && f && f.actions && !s.excluded) this.actionBars(card.querySelector(".actions"), f.actions);
    if (open) card.querySelector(".behaviour").textContent = s.excluded ? "" : behaviourLine(f, s);
    if (s.dominant) {
      card.querySelector(".dominant").textContent =
        `dominant: ${headline(s.dominant, s.shares)} of ${(s.visible ?? 0).toFixed(1)} s`;
    }
    if (open) this.sparkline(card.querySelector("canvas"), s.history);  // closed: nothing to paint
  }

  /** A few small bars: the AU-named facial actions (e.g. "AU12 smile"), 0-1. */
  actionBars(box, actions) {
    const keys = Object.keys(actions);
    if (box.childElementCount !== keys.length) {
      box.replaceChildren(...keys.map((k) => {
        const row = document.createElement("div");
        row.className = "act";
        row.dataset.au = k;
        const [au, ...words] = k.split("_");
        row.innerHTML = `<span class="au"></span><div class="bar"><span></span></div>`;
        row.querySelector(".au").textContent = `${au} ${SHORT_AU[k] ?? words.join(" ")}`;
        return row;
      }));
    }
    for (const row of box.children) {
      const v = Math.max(0, Math.min(1, actions[row.dataset.au] ?? 0));
      row.querySelector(".bar > span").style.width = `${Math.round(v * 100)}%`;
      row.title = `${row.dataset.au}: ${v.toFixed(2)}`;
    }
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

/** Expose the drawn geometry (page CSS pixels) to tests and debugging tools. */
function publishRects(o) {
  window.__overlayRects = o.rects;
  window.__overlayVideoRect = o.videoRect;
}

/** Human-readable metrics line. */
export function metricsText(m) {
  // Skipping is by design: only the newest frame is analysed, so the overlay never lags behind.
  return `${m.analysed_fps.toFixed(1)} analysed fps · latency ${Math.round(m.latency_ms)} ms · ` +
    `newest frame first: ${m.received_frames - m.dropped_frames} of ${m.received_frames} received analysed · ` +
    `faces detected every ${m.detect_every} frame${m.detect_every === 1 ? "" : "s"}`;
}
