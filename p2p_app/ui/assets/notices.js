// Notices: what the page tells people stays current and in sight.
// 1. Stale warnings go when things go right: every warning is shown twice, in the screen's message box
//    (.p2p-message) and as a pop-up (toast). A success hides the message box (Gradio then removes it from the page);
//    when one disappears, the pop-ups that repeated earlier warnings ("Image A is not rated yet") are closed too,
//    so they never sit next to "Ratings saved". A warning that comes with the success (an item already answered in
//    another tab) shows the message box again, so its pop-up stays.
// 2. The arena's reveal ("Ratings saved", which model made which image) appears below Submit; when it fills, it
//    is scrolled into view so it is not below the fold.
const closeToasts = () => document.querySelectorAll('[data-testid="toast-close"], .toast-close').forEach(b => b.click());
let messages = 0;
let reveal = '';
const check = () => {
  const n = document.querySelectorAll('.block.p2p-message').length;
  if (n < messages) closeToasts();
  messages = n;
  const box = [...document.querySelectorAll('.block.p2p-reveal')].find(window.p2p.laidOut);
  const text = box ? box.innerText.trim() : '';
  if (text && text !== reveal) box.scrollIntoView({block: 'nearest'});
  reveal = text;
};
window.p2p.register('notices', {update: check, watch: {nodes: true, text: true}});
