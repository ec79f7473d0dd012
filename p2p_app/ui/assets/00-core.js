// The page's core, loaded before every other script (common.page_js runs assets/*.js in name order): one page-wide
// watcher and the helpers the behaviours share. A behaviour (zoom, marks, reading, notices, prompt, ...) calls
// `p2p.register(name, {init, update})`: `init()` runs once at once; `update()` runs once at once and then after
// every change to the page, at most once a frame. The one MutationObserver on document.body sees what any
// behaviour needs (nodes added or removed, text changed, and the attributes src, class, style and hidden); each
// update is cheap and changes the page only when something differs, so its own changes settle after one frame.
// Nothing here adds to the page or reads what a panel shows beyond its image sources: no model, repeat or catch.
const behaviours = [];  // {name, update}
const names = [];       // every behaviour registered, in order
let pending = false;

function runAll() {
  pending = false;
  for (const b of behaviours) {
    try { b.update(); } catch (err) { console.error(`p2p ${b.name}:`, err); }  // one behaviour's bug stops no other
  }
}

// Ask for an update of every behaviour in the next frame (many changes in one frame: one update).
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(runAll);
}

const p2p = {
  register(name, {init, update} = {}) {
    names.push(name);
    try { if (init) init(); } catch (err) { console.error(`p2p ${name}:`, err); }
    if (!update) return;
    behaviours.push({name, update});
    try { update(); } catch (err) { console.error(`p2p ${name}:`, err); }
  },
  schedule,
  registered: () => [...names],
  // Visibility, two ways (each behaviour keeps the one it was written with): `shown` = has a box on screen
  // (not display:none, nor inside a hidden tab); `laidOut` = has an offset parent (the same for everything this
  // page has, which is never position:fixed).
  shown: (el) => !!el && el.getClientRects().length > 0,
  laidOut: (el) => !!el && !!el.offsetParent,
  closest: (el, selector) => (el && el.closest ? el.closest(selector) : null),
  // A page field of class `cls` (common.page_field: p2p-shown, p2p-active, p2p-marks) inside `root`: its text box.
  field: (root, cls) => root && root.querySelector(`.${cls} textarea, .${cls} input`),
  // Panels and viewers (common.build_panels, viewer.html).
  viewerOf: (el) => p2p.closest(el, '.p2p-viewer'),
  frameOf: (el) => p2p.closest(el, '.p2p-panel .image-frame'),
  images: (viewer) => [...viewer.querySelectorAll('.p2p-panel .image-frame img')].filter(p2p.shown),
  // What a viewer shows, as its image sources: another key means another item.
  keyOf: (viewer) => p2p.images(viewer).map((img) => img.getAttribute('src') || '').join('|'),
  // Submit buttons ("Submit and continue (Ctrl+Enter)", the arena's "Submit ratings ...").
  isSubmit: (button) => !!button && /^Submit/.test(button.innerText.trim()),
  submitButton: () => [...document.querySelectorAll('button')].find((b) => p2p.laidOut(b) && p2p.isSubmit(b)),
  // Keys: a digit 1-9 pressed without Ctrl/Cmd/Alt (its number, else 0), and the element with the keyboard focus.
  digit: (e) => (/^[1-9]$/.test(e.key) && !e.ctrlKey && !e.metaKey && !e.altKey ? Number(e.key) : 0),
  focused: () => document.activeElement,
};
window.p2p = p2p;

new MutationObserver(schedule).observe(document.body, {
  subtree: true, childList: true, characterData: true, attributes: true,
  attributeFilter: ['src', 'class', 'style', 'hidden'],
});
