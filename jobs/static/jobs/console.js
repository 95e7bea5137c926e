/* The jobs console's live parts, without a full reload: every element with
 * data-live-url is re-fetched every data-live-seconds and its content
 * replaced (stopping once the server answers X-Live-Done: 1, or reloading
 * the page then when data-live-reload-when-done is set); the tenant picker
 * fills its datalist from the tenant search as one types. Same origin only. */
(function () {
  "use strict";

  function live(el) {
    var url = el.getAttribute("data-live-url");
    var every = (parseFloat(el.getAttribute("data-live-seconds")) || 3) * 1000;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          var done = response.headers.get("X-Live-Done") === "1";
          return response.text().then(function (html) { return { html: html, done: done }; });
        })
        .then(function (result) {
          if (result.done && el.hasAttribute("data-live-reload-when-done")) {
            window.location.reload();
            return;
          }
          if (el.contains(document.activeElement) && document.activeElement !== document.body) {
            setTimeout(tick, every); // someone is typing or clicking here: later
            return;
          }
          var openLog = el.querySelector("details[open]") !== null;
          el.innerHTML = result.html;
          if (openLog) {
            var details = el.querySelector("details");
            if (details) { details.open = true; }
          }
          el.setAttribute("data-live-updated", String(Date.now()));
          if (!result.done) { setTimeout(tick, every); }
        })
        .catch(function () { setTimeout(tick, every * 2); });
    }
    setTimeout(tick, every);
  }

  function tenantPicker(input) {
    var list = document.getElementById(input.getAttribute("list"));
    if (!list) { return; }
    var url = list.getAttribute("data-url");
    var timer = null;
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        fetch(url + "?q=" + encodeURIComponent(input.value), { credentials: "same-origin" })
          .then(function (response) { return response.json(); })
          .then(function (data) {
            list.innerHTML = "";
            (data.results || []).forEach(function (tenant) {
              var option = document.createElement("option");
              option.value = tenant.key;
              option.textContent = tenant.label;
              list.appendChild(option);
            });
            list.setAttribute("data-loaded", String((data.results || []).length));
          });
      }, 150);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live-url]").forEach(live);
    document.querySelectorAll("input[data-tenant-search]").forEach(tenantPicker);
  });
})();
