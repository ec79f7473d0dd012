// Keyboard: with a scale's radio button focused (Tab reaches it), the digit keys 1–9 pick that level and move
// the focus to the next scale on the page, so a whole trial can be answered from the keyboard; Ctrl+Enter
// (Cmd+Enter) presses the visible Submit button. Digits typed into text boxes are left alone.
// Gradio gives each radio input its own name, so a scale is the set of radios in one <fieldset>.
// Ranking screens: with a panel's rank dropdown focused (its text box, role "combobox"), a digit picks that rank
// (1 = best; a digit above the panel count does nothing) and moves the focus to the next rank dropdown, the same way.
const {laidOut, shown, digit, focused, submitButton} = window.p2p;
const radios = (root) => [...root.querySelectorAll('input[type=radio]')];
const scales = () => [...document.querySelectorAll('fieldset')].filter(f => laidOut(f) && radios(f).length);
const RANK_BOX = '.p2p-panel input[role=combobox]';
const rankBoxes = () => [...document.querySelectorAll(RANK_BOX)].filter(shown);

function pickScale(el, n) {
  const scale = el.closest('fieldset');
  const target = scale && radios(scale)[n - 1];
  if (!target) return false;
  target.click();
  const all = scales();
  const next = all[all.indexOf(scale) + 1];
  (next ? radios(next)[0] : target).focus();
  return true;
}

// Gradio's dropdown takes a choice as typed: the digit as the box's filter text, then Enter picks the one option
// it leaves (its own handler stores the value and leaves the box). A rank the list does not offer is not typed.
function pickRank(box, n) {
  const list = document.getElementById(box.getAttribute('aria-controls') || '');
  const options = list ? [...list.querySelectorAll('[role=option]')].map((o) => o.getAttribute('aria-label')) : null;
  if (options && !options.includes(String(n))) return;
  box.value = String(n);
  box.dispatchEvent(new Event('input', {bubbles: true}));
  box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', code: 'Enter', bubbles: true, cancelable: true}));
  const all = rankBoxes();
  const next = all[all.indexOf(box) + 1];
  if (next) setTimeout(() => next.focus(), 0);  // after Gradio's handler has finished with this box
}

function onKey(e) {
  if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
    const btn = submitButton();
    if (btn) { btn.click(); e.preventDefault(); }
    return;
  }
  const el = focused();
  const n = digit(e);
  if (!n || !el) return;
  if (el.type === 'radio') {
    if (pickScale(el, n)) e.preventDefault();
  } else if (el.matches(RANK_BOX)) {
    e.preventDefault();  // a rank box holds ranks only: a digit never goes in as filter text
    pickRank(el, n);
  }
}

window.p2p.register('keyboard', {init: () => document.addEventListener('keydown', onKey)});
