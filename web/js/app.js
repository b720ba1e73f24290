// The page's entry: signing in, and a hash router over the views. Each view
// gets an AbortSignal that fires when the user leaves it (closing its event
// streams and timers).

import * as api from './api.js';
import { toast } from './ui.js';
import { signIn, jobsView, workersView } from './views.js';
import { jobView, tileView } from './job.js';
import { submitView } from './submit.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let current = null;

const routes = [
  [/^#\/jobs\/(\d+)\/tiles\/(\d+)$/, m => tileView(Number(m[1]), Number(m[2]))],
  [/^#\/jobs\/(\d+)$/, m => jobView(Number(m[1]))],
  [/^#\/submit$/, () => submitView()],
  [/^#\/workers$/, () => workersView()],
  [/^#\/jobs$/, () => jobsView()],
];

async function render() {
  if (current) current.abort();
  current = new AbortController();
  const signal = current.signal;
  main.replaceChildren();
  if (!api.token()) {
    nav.hidden = true;
    signIn(main, () => route());
    return;
  }
  nav.hidden = false;
  const hash = location.hash || '#/jobs';
  for (const a of nav.querySelectorAll('a[data-nav]')) {
    const active = hash.startsWith(`#/${a.dataset.nav}`);
    if (active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  for (const [pattern, view] of routes) {
    const m = hash.match(pattern);
    if (m) {
      try {
        await view(m)(main, signal);
      } catch (e) {
        if (e.name !== 'AbortError' && !signal.aborted) {
          main.replaceChildren();
          const p = document.createElement('p');
          p.className = 'error';
          p.setAttribute('role', 'alert');
          p.textContent = e.message;
          main.append(p);
        }
      }
      return;
    }
  }
  location.hash = '#/jobs';
}

function route() {
  render();
}

window.addEventListener('hashchange', () => signInFromLink().then(route));
window.addEventListener('tessera:unauthorized', e => {
  if (!api.token()) return;
  api.clearToken();
  toast(`Signed out: ${e.detail}`, 'error');
  route();
});
document.getElementById('signout').addEventListener('click', () => {
  api.clearToken();
  location.hash = '#/jobs';
  route();
});

// A sign-in link (`tessera demo` prints one): `#token=ta_…`. The token rides
// in the fragment, which the browser never sends to the server, so it
// reaches no log; it leaves the address bar and the history at once.
async function signInFromLink() {
  const m = location.hash.match(/^#token=([^&]+)$/);
  if (!m) return;
  const value = decodeURIComponent(m[1]);
  history.replaceState(null, '', `${location.pathname}${location.search}#/jobs`);
  try {
    await api.check(value);
    api.setToken(value, false);
  } catch (err) {
    toast(`The sign-in link's token is not accepted: ${err.message}`, 'error');
  }
}

signInFromLink().then(route);
// Where to go if this page's coordinator dies (a farm of several).
api.learnCoordinators();
setInterval(api.learnCoordinators, 30000);
