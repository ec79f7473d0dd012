// Artifact marking (studies with `mark_artifacts`): with "Mark artifacts" pressed in a viewer's toolbar, a click on
// an image (not a drag: drags pan a zoomed image, zoom.js) puts a mark where the image looks wrong; a click on a
// mark takes it away. Points are image-normalised (x right, y down, 0..1), so they mean the same spot at any zoom
// and on any screen size. The screen's `.p2p-marks` field holds them as JSON {"<position>": [[x, y], ...]}, the
// position being the panel's place on screen (1 = Image A); Submit sends it and the server maps positions to
// images. The server fills the field for every item it shows (empty, or a reopened item's stored marks): a new
// item starts from it; after that the marks drawn are the truth and the field is kept equal to them.
// Confidence (studies with `mark_confidence`; the toolbar then has `[data-p2p-conf]` buttons 1-5): the mark just
// placed is the selected one; a digit key 1-5 (or its button) sets how sure the rater is that it is an artifact,
// stored as the point's third value [x, y, c]. A mark starts without one (drawn hollow) and the server refuses a
// Submit while any mark lacks it. Digits typed into a text box or on a focused scale are left to them.
const HIT_PX = 12;       // a click this close to a mark removes it
const CLICK_PX = 5;      // a pointer that moved further is a drag, not a click
const MAX_PER_IMAGE = 20;
const views = new WeakMap(); // viewer -> {on, marks: Map(position -> [[x, y(, c)]]), trial on screen, picked}
const downs = new Map();     // pointerId -> {x, y}
const {viewerOf, frameOf} = window.p2p;
const pageField = (screen, cls) => window.p2p.field(screen, cls);
const fieldOf = (viewer) => pageField(viewer.closest('.p2p-screen'), 'p2p-marks');
const panelsOf = (viewer) => [...viewer.querySelectorAll('.p2p-panel')];
const round = (v) => Math.round(Math.min(1, Math.max(0, v)) * 1e4) / 1e4;
const asksConfidence = (viewer) => !!viewer.querySelector('[data-p2p-conf]');
const viewOf = (viewer) => {
  let v = views.get(viewer);
  if (!v) { v = {on: false, marks: new Map(), trial: null, picked: null}; views.set(viewer, v); }
  return v;
};

function parse(text) {
  const marks = new Map();
  try {
    const data = JSON.parse(text || '{}');
    for (const [position, points] of Object.entries(data || {})) {
      if (Array.isArray(points)) {
        marks.set(Number(position), points.map((p) => (p.length > 2 && p[2] != null
          ? [Number(p[0]), Number(p[1]), Number(p[2])] : [Number(p[0]), Number(p[1])])));
      }
    }
  } catch (err) { /* an unreadable field shows no marks; the server refuses it on Submit with a message */ }
  return marks;
}

function serialise(marks) {
  const out = {};
  for (const [position, points] of [...marks.entries()].sort((a, b) => a[0] - b[0])) {
    if (points.length) out[position] = points;
  }
  return JSON.stringify(out);
}

function save(viewer) {
  const v = viewOf(viewer);
  const field = fieldOf(viewer);
  const text = serialise(v.marks);
  if (field && field.value !== text) {
    field.value = text;
    field.dispatchEvent(new Event('input', {bubbles: true}));
  }
  draw(viewer);
}

// The layer of dots sits on the image and takes the image's own zoom transform, so a dot stays on its spot.
function draw(viewer) {
  const v = viewOf(viewer);
  const button = viewer.querySelector('[data-p2p-mark="toggle"]');
  if (button && button.getAttribute('aria-pressed') !== String(v.on)) button.setAttribute('aria-pressed', String(v.on));
  viewer.classList.toggle('p2p-marking', v.on);
  const count = viewer.querySelector('.p2p-mark-count');
  const total = [...v.marks.values()].reduce((n, pts) => n + pts.length, 0);
  const asks = asksConfidence(viewer);
  const unrated = asks ? [...v.marks.values()].reduce((n, pts) => n + pts.filter((p) => p.length < 3).length, 0) : 0;
  let text = total ? `${total} mark${total === 1 ? '' : 's'}` : '';
  if (unrated) text += `, ${unrated} without confidence`;
  if (count && count.textContent !== text) count.textContent = text;
  const picked = pickedPoint(viewer);
  for (const btn of viewer.querySelectorAll('[data-p2p-conf]')) {
    const pressed = String(!!picked && picked.length > 2 && String(picked[2]) === btn.dataset.p2pConf);
    if (btn.getAttribute('aria-pressed') !== pressed) btn.setAttribute('aria-pressed', pressed);
    if (btn.disabled !== !picked) btn.disabled = !picked;
  }
  panelsOf(viewer).forEach((panel, i) => {
    const frame = panel.querySelector('.image-frame');
    const img = frame && frame.querySelector('img');
    let layer = frame && frame.querySelector('.p2p-mark-layer');
    const points = v.marks.get(i + 1) || [];
    if (!img) { if (layer) layer.remove(); return; }
    if (!layer) {
      layer = document.createElement('div');
      layer.className = 'p2p-mark-layer';
      layer.setAttribute('aria-hidden', 'true');
      frame.appendChild(layer);
    }
    if (layer.style.transform !== img.style.transform) layer.style.transform = img.style.transform;
    const scale = img.offsetWidth ? img.getBoundingClientRect().width / img.offsetWidth : 1;
    const sel = v.picked && v.picked.position === i + 1 ? v.picked.index : -1;
    const want = points.map((p) => p.join(',')).join(' ') + `|${sel}|${asks}`;
    if (layer.dataset.points !== want || layer.dataset.scale !== String(scale)) {
      layer.dataset.points = want;
      layer.dataset.scale = String(scale);
      layer.replaceChildren(...points.map(([x, y, c], k) => {
        const dot = document.createElement('span');
        dot.className = 'p2p-mark';
        if (asks) {
          dot.textContent = c == null ? '' : String(c);
          if (c == null) dot.classList.add('p2p-mark-unrated');
          if (k === sel) dot.classList.add('p2p-mark-picked');
        }
        dot.style.left = `${x * 100}%`;
        dot.style.top = `${y * 100}%`;
        dot.style.transform = `translate(-50%, -50%) scale(${1 / (scale || 1)})`;
        return dot;
      }));
    }
  });
}

// A new item on screen (the screen's `.p2p-shown` trial changed): its marks are what the server put in the field
// (none, or a reopened item's stored ones). Otherwise the marks drawn are the truth and the field is kept equal to
// them (Gradio may re-render the field with an older value).
function sync() {
  for (const viewer of document.querySelectorAll('.p2p-viewer')) {
    const field = fieldOf(viewer);
    if (!field) continue;
    const screen = viewer.closest('.p2p-screen');
    const shown = pageField(screen, 'p2p-shown');
    const trial = shown ? shown.value : '';
    const v = viewOf(viewer);
    if (trial !== v.trial) {
      v.trial = trial;
      v.marks = parse(field.value);
      v.picked = null;
      v.on = v.on && !!trial;
      draw(viewer);
    } else if (field.value !== serialise(v.marks)) {
      save(viewer);
    } else {
      draw(viewer);
    }
  }
}

function clickAt(viewer, frame, e) {
  const img = frame.querySelector('img');
  const panel = frame.closest('.p2p-panel');
  if (!img || !panel) return;
  const position = panelsOf(viewer).indexOf(panel) + 1;
  const r = img.getBoundingClientRect();
  if (!r.width || !r.height) return;
  const v = viewOf(viewer);
  const points = v.marks.get(position) || [];
  const hit = points.findIndex(([x, y]) => Math.hypot(r.left + x * r.width - e.clientX, r.top + y * r.height - e.clientY) <= HIT_PX);
  if (hit >= 0) {
    points.splice(hit, 1);
    const p = v.picked;
    if (p && p.position === position) {
      v.picked = p.index === hit ? null : {position, index: p.index - (p.index > hit ? 1 : 0)};
    }
  } else if (points.length < MAX_PER_IMAGE) {
    points.push([round((e.clientX - r.left) / r.width), round((e.clientY - r.top) / r.height)]);
    if (asksConfidence(viewer)) v.picked = {position, index: points.length - 1};
  }
  v.marks.set(position, points);
  save(viewer);
}

// The selected mark (the one placed last) as its stored array, or null.
function pickedPoint(viewer) {
  const v = viewOf(viewer);
  const p = v.picked;
  const points = p ? v.marks.get(p.position) : null;
  return points && points[p.index] ? points[p.index] : null;
}

function setConfidence(viewer, n) {
  const point = pickedPoint(viewer);
  if (!point || n < 1 || n > 5) return false;
  point[2] = n;
  save(viewer);
  return true;
}

// A digit 1-5 sets the selected mark's confidence, unless the focus is in a field that takes digits itself.
function onKey(e) {
  const n = window.p2p.digit(e);
  if (!n || n > 5) return;
  const el = window.p2p.focused();
  if (el && el.matches && el.matches('input, textarea, select, [contenteditable=true], [role=combobox]')) return;
  for (const viewer of document.querySelectorAll('.p2p-viewer')) {
    if (viewer.getClientRects().length && asksConfidence(viewer) && setConfidence(viewer, n)) {
      e.preventDefault();
      return;
    }
  }
}

function init() {
  document.addEventListener('pointerdown', (e) => downs.set(e.pointerId, {x: e.clientX, y: e.clientY}), true);
  document.addEventListener('pointerup', (e) => {
    const down = downs.get(e.pointerId);
    downs.delete(e.pointerId);
    const frame = frameOf(document.elementFromPoint(e.clientX, e.clientY)) || frameOf(e.target);
    const viewer = viewerOf(frame);
    if (!viewer || !viewOf(viewer).on || !down) return;
    if (Math.hypot(e.clientX - down.x, e.clientY - down.y) > CLICK_PX) return;  // a drag (pan), not a mark
    clickAt(viewer, frame, e);
  }, true);
  document.addEventListener('click', (e) => {
    const btn = window.p2p.closest(e.target, '[data-p2p-mark]');
    const viewer = viewerOf(btn);
    if (!viewer) return;
    const v = viewOf(viewer);
    if (btn.dataset.p2pMark === 'toggle') { v.on = !v.on; draw(viewer); }
    if (btn.dataset.p2pMark === 'clear') { v.marks = new Map(); v.picked = null; save(viewer); }
  });
  document.addEventListener('click', (e) => {
    const btn = window.p2p.closest(e.target, '[data-p2p-conf]');
    const viewer = viewerOf(btn);
    if (viewer) setConfidence(viewer, Number(btn.dataset.p2pConf));
  });
  document.addEventListener('keydown', onKey);
  setInterval(sync, 300);  // besides the page's changes: Gradio may set a field's value without a DOM change
}
window.p2p.register('marks', {init, update: sync, watch: {nodes: true, attributes: ['src', 'style']}});
