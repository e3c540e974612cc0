(function () {
  "use strict";
  var tip = document.getElementById("tip");
  document.addEventListener("mousemove", function (event) {
    var target = event.target;
    var text = target && target.getAttribute ? target.getAttribute("data-tip") : null;
    if (text) {
      tip.textContent = text;
      tip.style.display = "block";
      tip.style.left = (event.clientX + 12) + "px";
      tip.style.top = (event.clientY + 12) + "px";
    } else {
      tip.style.display = "none";
    }
  });
  function cellValue(row, index) {
    var text = row.cells[index] ? row.cells[index].textContent : "";
    var plain = text.replace(/[\s,%]/g, "");
    return /^-?[0-9]+(\.[0-9]+)?$/.test(plain) ? parseFloat(plain) : text;
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
      header.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var descending = header.getAttribute("data-sort") !== "desc";
        rows.sort(function (a, b) {
          var x = cellValue(a, index), y = cellValue(b, index);
          var order = (typeof x === "number" && typeof y === "number") ? x - y
            : String(x).localeCompare(String(y));
          return descending ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
        header.setAttribute("data-sort", descending ? "desc" : "asc");
      });
    });
  });
  var drawn = 0;
  Array.prototype.forEach.call(document.querySelectorAll("svg.chart"), function (svg) {
    if (svg.querySelectorAll("rect, path, circle").length > 0) { drawn += 1; }
  });
  document.body.setAttribute("data-charts-drawn", String(drawn));
})();
