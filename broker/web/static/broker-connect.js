/*! broker-connect.js: open a broker connect link in a popup (or this window) and learn
 * how it ended. Served by the broker at /broker-connect.js; no build step, no dependency.
 *
 * On the host's page:
 *
 *   BrokerConnect.open(connectUrl, {mode: "popup"})   // or mode: "redirect"
 *     -> Promise<{status, connection_id}>
 *        status: "connected" | "pending_confirmation" | "error" | "cancelled" | "closed"
 *        (rejects only when the browser blocked the popup and no fallback was asked for)
 *   BrokerConnect.attach(link, {onOutcome, onError, fallback})
 *     makes an <a href="connectUrl"> open in a popup; without JavaScript the link still
 *     works, in this window, and the return_url brings the user back
 *   BrokerConnect.outcome(url)   // {status, connection_id} from a return URL's query
 *
 * On the broker's finished page (the broker includes this file there itself): the
 * outcome is posted to the page's opener at each origin of BROKER_CONNECT_ORIGINS.
 * postMessage drops a message whose target origin is not the opener's, so only an
 * allow-listed page learns anything; the helper accepts messages only from the broker's
 * origin and from the popup it opened.
 */
(function (global) {
  "use strict";

  var SOURCE = "broker-connect";
  var STATUSES = ["connected", "pending_confirmation", "error", "cancelled"];
  var FEATURES = "popup=yes,width=520,height=720";

  function outcome(url) {
    var query;
    try {
      query = new URL(String(url), global.location.href).searchParams;
    } catch (e) {
      return null;
    }
    var status = query.get("status");
    if (STATUSES.indexOf(status) < 0) {
      return null;
    }
    return {status: status, connection_id: query.get("connection_id") || null};
  }

  function never() {
    return new Promise(function () {});
  }

  function redirect(url) {
    global.location.assign(url);
    return never();
  }

  function watch(popup, broker) {
    return new Promise(function (resolve) {
      var timer = null;

      function finish(result) {
        global.removeEventListener("message", onMessage);
        global.clearInterval(timer);
        try {
          popup.close();
        } catch (e) { /* already closed */ }
        resolve(result);
      }

      function onMessage(event) {
        var data = event.data;
        if (event.origin !== broker || event.source !== popup) {
          return;
        }
        if (!data || data.source !== SOURCE || STATUSES.indexOf(data.status) < 0) {
          return;
        }
        finish({status: data.status, connection_id: data.connection_id || null});
      }

      global.addEventListener("message", onMessage);
      timer = global.setInterval(function () {
        if (popup.closed) {
          finish({status: "closed", connection_id: null});
          return;
        }
        try {  // back on the host's own return_url: same origin as this page
          if (popup.location.origin === global.location.origin) {
            var found = outcome(popup.location.href);
            if (found) {
              finish(found);
            }
          }
        } catch (e) { /* at the broker or the provider: not readable from here */ }
      }, 250);
    });
  }

  function open(url, options) {
    var opts = options || {};
    var target = new URL(String(url), global.location.href);
    if (opts.mode === "redirect") {
      return redirect(target.href);
    }
    var popup = global.open(target.href, opts.name || "broker-connect", FEATURES);
    if (!popup) {
      if (opts.fallback === "redirect") {
        return redirect(target.href);
      }
      return Promise.reject(new Error("the browser blocked the connect popup"));
    }
    popup.focus();
    return watch(popup, target.origin);
  }

  function attach(link, options) {
    var opts = options || {};
    link.addEventListener("click", function (event) {
      if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey ||
          event.shiftKey || event.altKey) {
        return;  // a new tab or window on purpose: leave it to the browser
      }
      event.preventDefault();
      open(link.href, opts).then(opts.onOutcome || function () {}, opts.onError || function () {});
    });
    return link;
  }

  function postFinished(doc) {
    var el = doc.getElementById("broker-connect-outcome");
    var opener = global.opener;
    if (!el || !opener || opener === global) {
      return false;
    }
    var message = {
      source: SOURCE,
      status: el.getAttribute("data-status"),
      connection_id: el.getAttribute("data-connection-id") || null
    };
    (el.getAttribute("data-origins") || "").split(" ").forEach(function (origin) {
      if (origin) {
        try {
          opener.postMessage(message, origin);
        } catch (e) { /* a malformed origin: nothing sent there */ }
      }
    });
    return true;
  }

  global.BrokerConnect = {open: open, attach: attach, outcome: outcome};
  if (global.document) {
    postFinished(global.document);
  }
})(window);
