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
  // "Download CSV" under every data table: the cells as shown, numbers without thousands
  // separators or the % sign, so a spreadsheet reads them as numbers.
  function csvCell(text) {
    var value = text.replace(/\s+/g, " ").trim();
    var number = value.replace(/,/g, "").replace(/ ?%$/, "").replace(/^−/, "-");
    if (/^[-+]?[0-9]+(\.[0-9]+)?$/.test(number)) { value = number; }
    return /[",\n]/.test(value) ? '"' + value.replace(/"/g, '""') + '"' : value;
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.data"), function (table) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "csv";
    button.textContent = "Download CSV";
    button.addEventListener("click", function () {
      var lines = Array.prototype.map.call(table.rows, function (row) {
        return Array.prototype.map.call(row.cells, function (c) { return csvCell(c.textContent); }).join(",");
      });
      var link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], {type: "text/csv"}));
      link.download = (table.getAttribute("data-table") || "table") + ".csv";
      document.body.appendChild(link);
      link.click();
      link.remove();
    });
    table.parentNode.insertBefore(button, table.nextSibling);
  });
  var drawn = 0;
  Array.prototype.forEach.call(document.querySelectorAll("svg.chart"), function (svg) {
    if (svg.querySelectorAll("rect, path, circle").length > 0) { drawn += 1; }
  });
  document.body.setAttribute("data-charts-drawn", String(drawn));
})();
