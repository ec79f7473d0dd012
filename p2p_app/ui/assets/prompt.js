// Prompt box: while the live counter under the arena's prompt (.p2p-budget, filled by the server as you type)
// shows a warning, the prompt box is outlined as over the limit (.p2p-over), so the problem is seen where one
// types; the counter's text says how much to cut. Nothing here changes or cuts the prompt.
const mark = () => {
  const counter = document.querySelector('.block.p2p-budget');
  const box = document.querySelector('.block.p2p-prompt');
  if (!counter || !box) return;
  box.classList.toggle('p2p-over', counter.innerText.trim().startsWith('⚠'));
};
window.p2p.register('prompt', {update: mark, watch: {nodes: true, text: true}});
