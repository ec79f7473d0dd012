// Active time: how long the rater really had the item in front of them. A screen (an element with class
// `p2p-screen`: a study's work area, the arena) counts while it is visible, the tab is visible, and the person did
// something (moved, clicked, typed, scrolled, touched) in the last 30 s; time hidden or idle beyond that is left
// out. The count restarts when the screen's trial changes (its `.p2p-shown` field) and is written into its
// `.p2p-active` field (seconds), which the Submit event sends; the server clamps it to the wall-clock time it
// measured itself, so a page cannot claim more time than passed.
const IDLE_MS = 30000;
const TICK_MS = 250;
const {field, laidOut, isSubmit} = window.p2p;
let lastInput = Date.now();
const counts = new WeakMap(); // screen element -> {trial, active (ms), at (ms)}

function tick() {
  const now = Date.now();
  const counting = document.visibilityState === 'visible' && now - lastInput <= IDLE_MS;
  for (const screen of document.querySelectorAll('.p2p-screen')) {
    const shown = field(screen, 'p2p-shown');
    const trial = shown ? shown.value : '';
    let c = counts.get(screen);
    if (!c || c.trial !== trial) { c = { trial, active: 0, at: now }; counts.set(screen, c); }
    // a throttled or hidden page ticks late: never count more than two ticks at once
    if (counting && trial && laidOut(screen)) c.active += Math.min(now - c.at, 2 * TICK_MS);
    c.at = now;
    write(screen, c);
  }
}

// Written on every tick (the field is never more than one tick behind) and once more right before Submit.
function write(screen, c) {
  const out = field(screen, 'p2p-active');
  const value = (c.active / 1000).toFixed(2);
  if (!out || out.value === value) return;
  out.value = value;
  out.dispatchEvent(new Event('input', { bubbles: true }));
}

// Time-driven (a tick every 250 ms), not change-driven: no update of its own.
window.p2p.register('activity', {init() {
  for (const type of ['pointermove', 'pointerdown', 'keydown', 'wheel', 'scroll', 'touchstart', 'input']) {
    // only what the person does: the page's own events (this file's field updates included) are not activity
    document.addEventListener(type, (e) => { if (e.isTrusted) lastInput = Date.now(); }, { capture: true, passive: true });
  }
  setInterval(tick, TICK_MS);
  document.addEventListener('visibilitychange', tick);
  // Before Submit's own handler reads the fields (capture phase runs first; Ctrl+Enter clicks the button too).
  document.addEventListener('click', (e) => {
    const button = window.p2p.closest(e.target, 'button');
    const screen = button && button.closest('.p2p-screen');
    if (screen && isSubmit(button)) tick();
  }, { capture: true });
}});
