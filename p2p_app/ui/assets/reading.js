// The reading screen around the images:
// - window.p2pReading.showTrial(), run by the page after Submit / Previous item / Generate (common.SHOW_TRIAL_JS):
//   once the screen shows another item than when the button was pressed, scroll its top (progress and prompt,
//   .p2p-trial-top) to the top of the window and put the keyboard focus on its first scale's first option. Images
//   that finish loading within two seconds re-apply the scroll, unless the reader has scrolled, typed or clicked.
// - On touch devices (no hover, coarse pointer) keyboard hints such as "(Ctrl+Enter)" are taken out of button labels.
const MARGIN = 8, WAIT_MS = 1500, SETTLE_MS = 2000;
const shown = (el) => !!el && el.getClientRects().length > 0;
const images = (viewer) => [...viewer.querySelectorAll('.p2p-panel .image-frame img')].filter(shown);
const keyOf = (viewer) => images(viewer).map((img) => img.getAttribute('src') || '').join('|');
const viewers = () => [...document.querySelectorAll('.p2p-viewer')].filter((v) => shown(v) && images(v).length);
const pressed = new WeakMap();  // viewer -> what it showed when a button was last pressed

// The key on screen at the moment of a click (Ctrl+Enter clicks the Submit button too): showTrial compares with it.
document.addEventListener('click', (e) => {
  if (!(e.target.closest && e.target.closest('button'))) return;
  for (const viewer of document.querySelectorAll('.p2p-viewer')) pressed.set(viewer, keyOf(viewer));
}, true);

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

function showTrial() {
  const started = performance.now();
  const tick = () => {
    const viewer = viewers()[0];
    if (viewer) {
      const key = keyOf(viewer);
      if (key && key !== pressed.get(viewer)) {
        pressed.set(viewer, key);
        bringIntoView(viewer);
        return;
      }
    }
    if (performance.now() - started < WAIT_MS) setTimeout(tick, 50);  // the same item: a refused submit, no move
  };
  requestAnimationFrame(tick);
}
window.p2pReading = {showTrial};

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
let pending = false;
new MutationObserver(() => {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; stripHints(); });
}).observe(document.body, {subtree: true, childList: true, characterData: true});
stripHints();
