// tally's first-party tracker: page views on load and on history
// navigation, custom events with properties. No cookies, no build step.
//
//   <script defer data-domain="example.com" src="https://tally.example.com/js/script.js"></script>
//   tally("Signup", { props: { plan: "pro" } })   // also window.plausible(...)
(function () {
  "use strict";
  var script = document.currentScript;
  var domain = script.getAttribute("data-domain") || location.hostname.replace(/^www\./, "");
  var api = script.getAttribute("data-api") || new URL("/api/event", script.src).href;
  var hashMode = script.getAttribute("data-hash") !== null;
  var lastPage = null;

  function send(name, options) {
    options = options || {};
    if (/^localhost$|^127(\.[0-9]+){0,2}\.[0-9]+$|^\[::1?\]$/.test(location.hostname) &&
        script.getAttribute("data-local") === null) {
      return;
    }
    var body = {
      n: name,
      u: options.u || location.href,
      d: domain,
      r: document.referrer || null,
      w: window.innerWidth,
    };
    if (hashMode) body.h = 1;
    if (options.props) body.p = options.props;
    var req = new XMLHttpRequest();
    req.open("POST", api, true);
    req.setRequestHeader("Content-Type", "text/plain");
    req.onreadystatechange = function () {
      if (req.readyState === 4 && options.callback) options.callback({ status: req.status });
    };
    req.send(JSON.stringify(body));
  }

  function pageview() {
    var page = location.pathname + (hashMode ? location.hash : "");
    if (page === lastPage) return;
    lastPage = page;
    send("pageview");
  }

  var queued = (window.tally && window.tally.q) || (window.plausible && window.plausible.q) || [];
  window.tally = window.plausible = function (name, options) { send(name, options); };
  for (var i = 0; i < queued.length; i++) window.tally.apply(this, queued[i]);

  var push = history.pushState;
  if (push) {
    history.pushState = function () {
      push.apply(this, arguments);
      pageview();
    };
    window.addEventListener("popstate", pageview);
  }
  if (hashMode) window.addEventListener("hashchange", pageview);
  if (document.visibilityState === "prerender") {
    document.addEventListener("visibilitychange", function once() {
      if (document.visibilityState === "visible") {
        document.removeEventListener("visibilitychange", once);
        pageview();
      }
    });
  } else {
    pageview();
  }
})();
