// Zoom, pan and window/level for the images of one trial. Every panel image inside one .p2p-viewer (the panels of
// a screen, built by common.build_panels) gets the same CSS transform and filter, so the same spot of each image is
// compared. Wheel over an image zooms around the pointer, drag pans, two fingers pinch; the toolbar's − / + / Reset
// and the keys + / - / 0 (arrows pan) on a focused image do the same. Brightness/contrast (window/level) show when
// every image of the screen is greyscale. A new item (other image sources) resets both. Nothing here is stored or
// sent: it only styles the <img> elements.
const MAX = 8, STEP = 1.25, GREY_TOLERANCE = 6, SAMPLE = 64;
const states = new WeakMap();  // viewer element -> {s, x, y, b, c, key, grey}
const greyBySrc = new Map();   // image source -> true / false (each image is checked once)
const {frameOf, viewerOf, images, keyOf} = window.p2p;
const fresh = () => ({s: 1, x: 0, y: 0, b: 1, c: 1, key: '', grey: false});
const stateOf = (viewer) => {
  let st = states.get(viewer);
  if (!st) { st = fresh(); states.set(viewer, st); }
  return st;
};
const round = (v) => Math.round(v * 1e4) / 1e4;

// x, y: where the image's top-left corner sits, as a fraction of the panel (0 .. 1 - s): the image always fills it.
function clamp(st) {
  st.s = Math.min(MAX, Math.max(1, st.s));
  st.x = Math.min(0, Math.max(1 - st.s, st.x));
  st.y = Math.min(0, Math.max(1 - st.s, st.y));
}

function apply(viewer) {
  const st = stateOf(viewer);
  // percentages of the image's own box: one string for every panel, whatever its rendered size
  const transform = st.s === 1 ? '' : `translate(${round(st.x * 100)}%, ${round(st.y * 100)}%) scale(${round(st.s)})`;
  const filter = st.b === 1 && st.c === 1 ? '' : `brightness(${round(st.b)}) contrast(${round(st.c)})`;
  for (const img of images(viewer)) {
    if (img.style.transformOrigin !== '0px 0px') img.style.transformOrigin = '0 0';
    if (img.style.transform !== transform) img.style.transform = transform;
    if (img.style.filter !== filter) img.style.filter = filter;
    if (img.draggable) img.draggable = false;
  }
  if (viewer.classList.contains('p2p-zoomed') !== st.s > 1) viewer.classList.toggle('p2p-zoomed', st.s > 1);
  const level = viewer.querySelector('.p2p-zoom-level');
  const text = `${Math.round(st.s * 100)}%`;
  if (level && level.textContent !== text) level.textContent = text;
  const wl = viewer.querySelector('.p2p-wl');
  if (wl && wl.hidden === st.grey) wl.hidden = !st.grey;
  for (const input of viewer.querySelectorAll('input[data-p2p-wl]')) {
    const value = String(input.dataset.p2pWl === 'brightness' ? st.b : st.c);
    if (input.value !== value && document.activeElement !== input) input.value = value;
  }
}

function zoomAt(viewer, factor, u = 0.5, v = 0.5) {
  const st = stateOf(viewer);
  const s = Math.min(MAX, Math.max(1, st.s * factor));
  // keep the image point under (u, v) where it is
  st.x = u - (s * (u - st.x)) / st.s;
  st.y = v - (s * (v - st.y)) / st.s;
  st.s = s;
  clamp(st);
  apply(viewer);
}

function panBy(viewer, dx, dy) {
  const st = stateOf(viewer);
  st.x += dx;
  st.y += dy;
  clamp(st);
  apply(viewer);
}

function resetZoom(viewer) {
  Object.assign(stateOf(viewer), {s: 1, x: 0, y: 0});
  apply(viewer);
}

function resetWindow(viewer) {
  Object.assign(stateOf(viewer), {b: 1, c: 1});
  apply(viewer);
}

// Greyscale: every pixel of a nearest-neighbour sample has R = G = B (within a small tolerance). Presentation images
// come from this server, so the canvas is readable; an image from elsewhere counts as colour (no controls).
function isGrey(img) {
  const src = img.getAttribute('src') || '';
  if (greyBySrc.has(src)) return greyBySrc.get(src);
  if (!img.complete || !img.naturalWidth) return null;
  let grey = new URL(img.currentSrc || src, document.baseURI).origin === window.location.origin;
  if (grey) {  // same origin: the canvas stays readable
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = SAMPLE;
    const ctx = canvas.getContext('2d', {willReadFrequently: true});
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, 0, 0, SAMPLE, SAMPLE);
    const d = ctx.getImageData(0, 0, SAMPLE, SAMPLE).data;
    for (let i = 0; i < d.length && grey; i += 4) {
      grey = Math.abs(d[i] - d[i + 1]) <= GREY_TOLERANCE && Math.abs(d[i + 1] - d[i + 2]) <= GREY_TOLERANCE;
    }
  }
  greyBySrc.set(src, grey);
  return grey;
}

// Called whenever the page changes: a viewer whose images changed shows a new item (zoom and window reset).
function refresh() {
  for (const viewer of document.querySelectorAll('.p2p-viewer')) {
    const st = stateOf(viewer);
    const key = keyOf(viewer);
    if (key !== st.key) Object.assign(st, fresh(), {key});
    const imgs = images(viewer);
    const greys = imgs.map(isGrey);
    st.grey = imgs.length > 0 && greys.every((g) => g === true);
    if (viewer.classList.contains('p2p-empty') !== !imgs.length) viewer.classList.toggle('p2p-empty', !imgs.length);
    apply(viewer);
  }
}

window.p2p.register('zoom', {update: refresh, watch: {nodes: true, attributes: ['src', 'class', 'style', 'hidden']}});
// An image that finished loading can now be checked for greyscale: one more update (not a change to the page).
document.addEventListener('load', (e) => { if (e.target.tagName === 'IMG') window.p2p.schedule('zoom'); }, true);

// Wheel: zoom around the pointer. At 100% zooming out (and at the maximum zooming in) leaves the wheel to the page.
document.addEventListener('wheel', (e) => {
  const frame = frameOf(e.target);
  const viewer = viewerOf(frame);
  if (!viewer) return;
  const st = stateOf(viewer);
  const zoomIn = e.deltaY < 0;
  if (!e.deltaY || (zoomIn && st.s >= MAX) || (!zoomIn && st.s <= 1)) return;
  e.preventDefault();
  const pixels = e.deltaY * (e.deltaMode === 1 ? 33 : e.deltaMode === 2 ? 400 : 1);
  const factor = Math.min(2, Math.max(0.5, Math.exp(-pixels * 0.002)));
  const r = frame.getBoundingClientRect();
  zoomAt(viewer, factor, (e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
}, {passive: false});

// Drag to pan (mouse, pen or one finger once zoomed); two fingers pinch-zoom around their midpoint.
const pointers = new Map();  // pointerId -> {x, y, frame, viewer}
const pinchOf = (viewer) => [...pointers.values()].filter((p) => p.viewer === viewer);
document.addEventListener('pointerdown', (e) => {
  const frame = frameOf(e.target);
  const viewer = viewerOf(frame);
  if (!viewer || (e.pointerType === 'mouse' && e.button !== 0)) return;
  pointers.set(e.pointerId, {x: e.clientX, y: e.clientY, frame, viewer});
  if (stateOf(viewer).s > 1 || pinchOf(viewer).length > 1) {
    frame.setPointerCapture(e.pointerId);  // the pointer is down now: capture cannot fail
    e.preventDefault();
  }
});
document.addEventListener('pointermove', (e) => {
  const p = pointers.get(e.pointerId);
  if (!p) return;
  const r = p.frame.getBoundingClientRect();
  const pair = pinchOf(p.viewer);
  if (pair.length === 2 && r.width) {
    const other = pair.find((q) => q !== p);
    const before = Math.hypot(p.x - other.x, p.y - other.y);
    const after = Math.hypot(e.clientX - other.x, e.clientY - other.y);
    if (before > 0) {
      zoomAt(p.viewer, after / before, ((e.clientX + other.x) / 2 - r.left) / r.width,
        ((e.clientY + other.y) / 2 - r.top) / r.height);
    }
  } else if (stateOf(p.viewer).s > 1 && r.width) {
    panBy(p.viewer, (e.clientX - p.x) / r.width, (e.clientY - p.y) / r.height);
  }
  p.x = e.clientX;
  p.y = e.clientY;
});
for (const type of ['pointerup', 'pointercancel']) document.addEventListener(type, (e) => pointers.delete(e.pointerId));
document.addEventListener('dragstart', (e) => { if (frameOf(e.target)) e.preventDefault(); });

// Keys on a focused image (Gradio wraps each image in a focusable button): + / - zoom, 0 resets, arrows pan.
document.addEventListener('keydown', (e) => {
  const el = document.activeElement;
  const container = window.p2p.closest(el, '.p2p-panel .image-container');
  const viewer = viewerOf(container);
  if (!viewer || e.ctrlKey || e.metaKey || e.altKey) return;
  const step = 0.1 / stateOf(viewer).s;
  const pans = {ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step]};
  if (e.key === '+' || e.key === '=') zoomAt(viewer, STEP);
  else if (e.key === '-' || e.key === '_') zoomAt(viewer, 1 / STEP);
  else if (e.key === '0') resetZoom(viewer);
  else if (pans[e.key] && stateOf(viewer).s > 1) panBy(viewer, ...pans[e.key]);
  else return;
  e.preventDefault();
});

// Toolbar buttons and the window/level sliders.
document.addEventListener('click', (e) => {
  const btn = window.p2p.closest(e.target, '[data-p2p-zoom], button[data-p2p-wl]');
  const viewer = viewerOf(btn);
  if (!viewer) return;
  const what = btn.dataset.p2pZoom || btn.dataset.p2pWl;
  if (what === 'in') zoomAt(viewer, STEP);
  else if (what === 'out') zoomAt(viewer, 1 / STEP);
  else if (btn.dataset.p2pZoom === 'reset') resetZoom(viewer);
  else if (btn.dataset.p2pWl === 'reset') resetWindow(viewer);
});
document.addEventListener('input', (e) => {
  const input = window.p2p.closest(e.target, 'input[data-p2p-wl]');
  const viewer = viewerOf(input);
  const value = input && Number(input.value);
  if (!viewer || !Number.isFinite(value)) return;
  stateOf(viewer)[input.dataset.p2pWl === 'brightness' ? 'b' : 'c'] = value;
  apply(viewer);
});
