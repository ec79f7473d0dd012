// Keyboard: with a scale's radio button focused (Tab reaches it), the digit keys 1–9 pick that level and move
// the focus to the next scale on the page, so a whole trial can be answered from the keyboard; Ctrl+Enter
// (Cmd+Enter) presses the visible Submit button. Digits typed into text boxes are left alone.
// Gradio gives each radio input its own name, so a scale is the set of radios in one <fieldset>.
const radios = (root) => [...root.querySelectorAll('input[type=radio]')];
const scales = () => [...document.querySelectorAll('fieldset')].filter(f => f.offsetParent && radios(f).length);
document.addEventListener('keydown', (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
    const btn = [...document.querySelectorAll('button')].find(b => b.offsetParent && /^Submit/.test(b.innerText.trim()));
    if (btn) { btn.click(); e.preventDefault(); }
    return;
  }
  const el = document.activeElement;
  if (!/^[1-9]$/.test(e.key) || e.ctrlKey || e.metaKey || e.altKey || !el || el.type !== 'radio') return;
  const scale = el.closest('fieldset');
  const target = scale && radios(scale)[Number(e.key) - 1];
  if (!target) return;
  e.preventDefault();
  target.click();
  const all = scales();
  const next = all[all.indexOf(scale) + 1];
  (next ? radios(next)[0] : target).focus();
});
