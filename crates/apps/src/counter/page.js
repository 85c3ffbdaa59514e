// The counter page: follows the value live (Server-Sent Events), adds one,
// and logs in, registers and logs out. Every change carries the CSRF token
// the server embedded in the page.
"use strict";

const csrf = document.querySelector('meta[name="csrf"]').content;
const counter = document.querySelector('meta[name="counter"]').content;
const $ = (id) => document.getElementById(id);
let shown = Number($("value").textContent);

function show(value) {
  // Values only grow; an older event arriving late does not move it back.
  if (value > shown) {
    shown = value;
    $("value").textContent = String(value);
  }
}

function say(text, isError) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

function signedIn(user) {
  $("who").textContent = user || "";
  $("signed-in").hidden = !user;
  $("signed-out").hidden = !!user;
}

async function post(path, body) {
  const resp = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try { data = await resp.json(); } catch (_) { /* empty body */ }
  return { status: resp.status, data };
}

function until(iso) {
  const at = new Date(iso);
  const mins = Math.max(1, Math.ceil((at - Date.now()) / 60000));
  const wait = mins >= 120 ? `${Math.round(mins / 60)} hours` : `${mins} minute${mins === 1 ? "" : "s"}`;
  return `${at.toLocaleString()} (in about ${wait})`;
}

async function increment() {
  $("inc").disabled = true;
  try {
    const { status, data } = await post(`/counter/${counter}/inc`);
    if (status === 200) {
      show(data.value);
      say(`Thanks! You can add one again at ${until(data.next_allowed_at)}.`);
    } else if (status === 429 && data.next_allowed_at) {
      say(`Not yet: you can add one again at ${until(data.next_allowed_at)}.`, true);
    } else if (status === 401) {
      say("Log in or register to add one.", true);
    } else {
      say(data.error || `Failed (${status}).`, true);
    }
  } finally {
    $("inc").disabled = false;
  }
}

function accountForm(id, path) {
  $(id).addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = e.target;
    const { status, data } = await post(path, {
      username: form.username.value,
      password: form.password.value,
    });
    if (status === 200) {
      form.reset();
      signedIn(data.user);
      say(`Welcome, ${data.user}.`);
    } else {
      say(data.error || `Failed (${status}).`, true);
    }
  });
}

function follow() {
  const source = new EventSource(`/counter/${counter}/events`);
  source.addEventListener("value", (e) => {
    show(JSON.parse(e.data).value);
    $("live").textContent = "live";
  });
  source.onerror = () => { $("live").textContent = "reconnecting…"; };
}

signedIn($("signed-in").dataset.user);
$("inc").addEventListener("click", increment);
accountForm("login-form", "/account/login");
accountForm("register-form", "/account/register");
$("logout-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  await post("/account/logout");
  signedIn(null);
  say("Logged out.");
});
follow();
