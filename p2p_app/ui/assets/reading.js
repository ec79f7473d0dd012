// The reading screen around the images:
// - After a click on a button of class p2p-next (Submit, Previous item, Generate; common.NEXT_ITEM; Ctrl+Enter clicks
//   Submit too), once the screen shows other images than when it was pressed: scroll the new item's top (progress
//   and prompt, .p2p-trial-top) to the top of the window and put the keyboard focus on its first scale's first
//   option. A refused submit changes no image and moves nothing; sign-in is no such button, so the one-time resume
//   code stays in sight. Images that finish loading within two seconds re-apply the scroll, unless the reader has
//   scrolled, typed or clicked meanwhile.
// - On touch devices (no hover, coarse pointer) keyboard hints such as "(Ctrl+Enter)" are taken out of button labels.
const MARGIN = 8, SETTLE_MS = 2000, WATCH_MS = 10 * 60 * 1000;  // generation can take minutes
const {shown, images, keyOf} = window.p2p;
const viewers = () => [...document.querySelectorAll('.p2p-viewer')].filter((v) => shown(v) && images(v).length);
let watch = null;  // after a p2p-next click: {keys: viewer -> its images then, until: give up (ms)}

function init() {
  document.addEventListener('click', (e) => {
    if (!window.p2p.closest(e.target, '.p2p-next')) return;
    const keys = new Map([...document.querySelectorAll('.p2p-viewer')].map((v) => [v, keyOf(v)]));
    watch = {keys, until: performance.now() + WATCH_MS};
  }, true);
}

// The item's first line: the last visible .p2p-trial-top before the viewer (else the viewer itself).
function topOf(viewer) {
  const before = [...document.querySelectorAll('.p2p-trial-top')]
    .filter((el) => shown(el) && el.compareDocumentPosition(viewer) & Node.DOCUMENT_POSITION_FOLLOWING);
  return before.length ? before[before.length - 1] : viewer;
}

function bringIntoView(viewer) {
  const target = topOf(viewer);
  let active = true;
  const scroll = () => {
    if (!active) return;
    const top = target.getBoundingClientRect().top + window.scrollY - MARGIN;
    window.scrollTo({top: Math.max(0, top), behavior: 'instant'});
  };
  const onLoad = (e) => { if (e.target.tagName === 'IMG' && viewer.contains(e.target)) requestAnimationFrame(scroll); };
  const events = ['wheel', 'touchstart', 'keydown', 'pointerdown'];
  const stop = () => {
    active = false;
    document.removeEventListener('load', onLoad, true);
    for (const type of events) window.removeEventListener(type, stop, true);
  };
  scroll();
  const first = [...viewer.querySelectorAll('.p2p-panel input[type=radio]')].find(shown);
  if (first) first.focus({preventScroll: true});
  document.addEventListener('load', onLoad, true);
  for (const type of events) window.addEventListener(type, stop, {capture: true, passive: true});
  setTimeout(stop, SETTLE_MS);
}

function check() {
  if (!watch) return;
  if (performance.now() > watch.until) { watch = null; return; }
  const viewer = viewers()[0];
  const key = viewer ? keyOf(viewer) : '';
  if (key && key !== watch.keys.get(viewer)) {
    watch = null;
    bringIntoView(viewer);
  }
}

// Touch devices: no keyboard hints in button labels (the labels themselves stay as the server sends them).
const touch = window.matchMedia('(hover: none), (pointer: coarse)');
const HINT = /\s*\((?:Ctrl|Cmd)\+Enter\)/;
function stripHints() {
  if (!touch.matches) return;
  for (const btn of document.querySelectorAll('button')) {
    for (const node of btn.childNodes) {
      if (node.nodeType === Node.TEXT_NODE && HINT.test(node.data)) node.data = node.data.replace(HINT, '');
    }
  }
}
window.p2p.register('reading', {init, update() { check(); stripHints(); },
                                 watch: {nodes: true, text: true, attributes: ['src', 'class', 'style']}});
