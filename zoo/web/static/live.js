// Live progress of pulls and imports on the home page: reads the page's JSON twin every 2 s while something is
// in flight and redraws #jobs-table. Without JavaScript the page shows the progress as of its loading.
(function () {
  "use strict";
  var table = document.getElementById("jobs-table");
  if (!table || !window.fetch) { return; }
  function size(n) {
    var u = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return i ? n.toFixed(1) + " " + u[i] : n + " B";
  }
  function cell(row, text) { var td = document.createElement("td"); td.textContent = text; row.appendChild(td); return td; }
  function draw(jobs) {
    while (table.firstChild) { table.removeChild(table.firstChild); }
    if (!jobs.length) {
      var empty = document.createElement("tr"); empty.className = "empty";
      cell(empty, "Nothing is being pulled or imported."); table.appendChild(empty); return;
    }
    jobs.forEach(function (j) {
      var row = document.createElement("tr"); row.className = "job"; row.setAttribute("data-what", j.what);
      cell(row, j.op); cell(row, j.what);
      var td = cell(row, "");
      if (j.total) {
        var bar = document.createElement("progress"); bar.className = "job-progress";
        bar.max = j.total; bar.value = j.done || 0; td.appendChild(bar);
        td.appendChild(document.createTextNode(" " + size(j.done || 0) + " / " + size(j.total)));
      } else { td.textContent = j.desc || "starting"; }
      table.appendChild(row);
    });
  }
  var busy = table.querySelector("tr.job") !== null, idle = 0;
  function tick() {
    fetch("/?format=json", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        draw(d.jobs || []);
        busy = (d.jobs || []).length > 0; idle = busy ? 0 : idle + 1;
        if (busy || idle < 3) { setTimeout(tick, 2000); }
      })
      .catch(function () { setTimeout(tick, 5000); });
  }
  if (busy) { setTimeout(tick, 2000); }
}());
