// The page's core, loaded before every other script (common.page_js runs assets/*.js in name order): one page-wide
// watcher and the helpers the behaviours share. A behaviour (zoom, marks, reading, notices, prompt, ...) calls
// `p2p.register(name, {init, update, watch})`: `init()` runs once at once; `update()` runs once at once and then,
// at most once a frame, after the changes to the page it watches. `watch` names them: `nodes` (elements added or
// removed), `text` (text changed) and `attributes` (a list of attribute names); without it, every change. The one
// MutationObserver on document.body sees the union of what the behaviours watch, and in the next frame updates
// only those that a change concerns, in the order they registered. Each update is cheap and changes the page only
// when something differs, so its own changes settle after one frame.
// Nothing here adds to the page or reads what a panel shows beyond its image sources: no model, repeat or catch.
const behaviours = [];  // {name, update, nodes, text, attributes (a Set, or null: all)}
const names = [];       // every behaviour registered, in order
const due = new Set();  // behaviours to update in the next frame
let pending = false;

function runDue() {
  pending = false;
  const now = behaviours.filter((b) => due.has(b));  // registration order
  due.clear();
  for (const b of now) {
    try { b.update(); } catch (err) { console.error(`p2p ${b.name}:`, err); }  // one behaviour's bug stops no other
  }
}

function mark(list) {
  for (const b of list) due.add(b);
  if (due.size && !pending) {
    pending = true;
    requestAnimationFrame(runDue);
  }
}

// Ask for an update in the next frame: of the behaviour called `name`, or of every behaviour.
const schedule = (name) => mark(behaviours.filter((b) => !name || b.name === name));

const concerns = (b, record) => (record.type === 'childList' ? b.nodes
  : record.type === 'characterData' ? b.text
    : !b.attributes || b.attributes.has(record.attributeName));

function changed(records) {
  mark(behaviours.filter((b) => !due.has(b) && records.some((r) => concerns(b, r))));
}

const p2p = {
  register(name, {init, update, watch} = {}) {
    names.push(name);
    try { if (init) init(); } catch (err) { console.error(`p2p ${name}:`, err); }
    if (!update) return;
    const w = watch || {nodes: true, text: true, attributes: null};
    behaviours.push({name, update, nodes: !!w.nodes, text: !!w.text, attributes: w.attributes ? new Set(w.attributes) : null});
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
  // A screen's Submit button: the declared class (ui/page.py Css.SUBMIT, sent as window.p2pPage), never its label.
  isSubmit: (button) => !!button && !!button.closest('.' + (((window.p2pPage || {}).classes || {}).submit || 'p2p-submit')),
  submitButton: () => [...document.querySelectorAll('button')].find((b) => p2p.laidOut(b) && p2p.isSubmit(b)),
  // Keys: a digit 1-9 pressed without Ctrl/Cmd/Alt (its number, else 0), and the element with the keyboard focus.
  digit: (e) => (/^[1-9]$/.test(e.key) && !e.ctrlKey && !e.metaKey && !e.altKey ? Number(e.key) : 0),
  focused: () => document.activeElement,
};
window.p2p = p2p;

new MutationObserver(changed).observe(document.body, {
  subtree: true, childList: true, characterData: true, attributes: true,
  attributeFilter: ['src', 'class', 'style', 'hidden'],
});
