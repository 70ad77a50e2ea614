// Sortable tables: a click on a header of a table.sortable sorts its rows by that column, a second click
// reverses. Numeric cells sort by their data-v value (empty: last), the others as text (numbers in it
// compared as numbers).
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute("aria-sort") !== "ascending";
    th.parentNode.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    function key(row) {
      var c = row.cells[col];
      return c.hasAttribute("data-v") ? c.getAttribute("data-v") : c.textContent;
    }
    Array.prototype.slice.call(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y), c;
      if (!isNaN(nx) && !isNaN(ny)) c = nx - ny;
      else if (isNaN(nx) !== isNaN(ny)) c = isNaN(nx) ? 1 : -1;
      else c = x.localeCompare(y, undefined, { numeric: true });
      return asc ? c : -c;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
