// cachedembed dashboard: draws the two charts and refreshes the numbers from the JSON API.
// The page is complete without this script; it formats numbers exactly as the server
// (and `cachedembed stats`) does, so a refresh never changes how an unchanged number looks.
(function () {
  "use strict";
  const boot = JSON.parse(document.getElementById("dashboard-data").textContent);
  // Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
  const COLORS = { spent: "#0072B2", saved: "#E69F00", hits: "#009E73", misses: "#D55E00" };
  const query = boot.query ? "?" + boot.query : "";
  let refreshes = 0;

  // -- formatting, as cachedembed.stats and cachedembed.manage.format_size do it --

  function commas(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  // Python's format(v, ".Nf"): correctly rounded, exact ties to even (toFixed takes the larger).
  function fixed(v, d) {
    const rounded = v.toFixed(d);
    const exact = v.toFixed(Math.min(100, d + 40));
    const point = exact.indexOf(".");
    if (!/^50*$/.test(exact.slice(point + 1 + d))) return rounded;
    const truncated = exact.slice(0, point + 1 + d).replace(/\.$/, "");
    return Number(truncated.slice(-1)) % 2 === 0 ? truncated : rounded;
  }

  function grouped(v, d) {
    const [whole, frac] = fixed(v, d).split(".");
    return commas(whole) + (frac === undefined ? "" : "." + frac);
  }

  const int = (n) => commas(String(n));

  function usd(v) {
    if (v === null) return "unknown";
    if (v === 0) return "$0.00";
    if (v < 0.01) return "$" + fixed(v, 6);
    return "$" + (v < 1 ? grouped(v, 4) : grouped(v, 2));
  }

  function totalUsd(t, key) {
    if (t[key] === null) return "unknown";
    return usd(t[key]) + (t.models_without_price ? " + unknown" : "");
  }

  function num(value, estimated) {
    const text = int(value);
    if (estimated && estimated === value) return "~" + text;
    return estimated ? text + "*" : text;
  }

  const secs = (v) => (v === null ? "-" : v < 120 ? fixed(v, 1) + "s" : fixed(v / 60, 1) + "m");
  const rate = (v) => (v === null ? "-" : fixed(100 * v, 1) + "%");

  function size(n) {
    for (const [unit, scale] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
      if (n >= scale) return fixed(n / scale, 1) + " " + unit;
    }
    return n + " B";
  }

  // -- the page's parts -----------------------------------------------------------

  const TOTALS = {
    texts: (t) => int(t.texts),
    hit_rate: (t) => rate(t.hit_rate),
    tokens_embedded: (t) => num(t.tokens_embedded, t.tokens_embedded_estimated),
    tokens_saved: (t) => num(t.tokens_saved, t.tokens_saved_estimated),
    dollars_spent: (t) => totalUsd(t, "dollars_spent"),
    dollars_saved: (t) => totalUsd(t, "dollars_saved"),
    provider_seconds_saved: (t) => secs(t.provider_seconds_saved),
  };

  function fillTable(id, rows, empty) {
    const body = document.querySelector("#" + id + " tbody");
    const columns = document.querySelectorAll("#" + id + " thead th").length;
    const trs = (rows.length ? rows : [[empty]]).map((cells) => {
      const tr = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        td.textContent = cell;
        if (!rows.length) td.colSpan = columns;
        tr.appendChild(td);
      }
      return tr;
    });
    body.replaceChildren(...trs);
  }

  function modelRows(models, usage) {
    const byNs = new Map(usage.map((u) => [u.namespace, u]));
    return models.map((m) => {
      const u = byNs.get(m.namespace);
      return [
        m.provider, m.model, m.role, String(m.dim || "-"), int(m.entries), size(m.bytes),
        m.first_used || "-", m.last_used || "-",
        u ? int(u.texts) : "0", u ? rate(u.hit_rate) : "-",
        u ? usd(u.dollars_spent) : "-", u ? usd(u.dollars_saved) : "-",
      ];
    });
  }

  function dayRows(days) {
    return days.map((d) => [
      d.day, int(d.texts), int(d.hits), int(d.misses),
      totalUsd(d, "dollars_spent"), totalUsd(d, "dollars_saved"),
    ]);
  }

  // -- charts -----------------------------------------------------------------------

  const charts = {};

  function barChart(id, datasets, labels, stacked, format) {
    const data = { labels: labels, datasets: datasets };
    if (charts[id]) {
      charts[id].data = data;
      charts[id].options.scales.y.ticks.callback = format;
      charts[id].update("none");
      return;
    }
    charts[id] = new Chart(document.getElementById(id), {
      type: "bar",
      data: data,
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: { stacked: stacked },
          y: { stacked: stacked, beginAtZero: true, ticks: { callback: format } },
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + format(c.raw) } },
        },
      },
    });
  }

  function drawCharts(stats) {
    if (typeof Chart === "undefined") return; // the tables still show every number
    const days = stats.days;
    const labels = days.map((d) => d.day);
    // As `stats --by day`: dollars when every model shown has a price, else tokens.
    const inDollars = stats.total.models_without_price === 0;
    const [spentKey, savedKey] = inDollars
      ? ["dollars_spent", "dollars_saved"]
      : ["tokens_embedded", "tokens_saved"];
    const unit = inDollars ? "dollars" : "tokens (some models have no price)";
    const t = stats.total;
    document.getElementById("chart-dollars-caption").textContent =
      "Spent vs saved per day, in " + unit;
    document.getElementById("chart-dollars").setAttribute(
      "aria-label",
      "Bar chart of spent and saved per day over " + days.length + " days, in " + unit +
        ": spent " + (inDollars ? totalUsd(t, "dollars_spent") : int(t.tokens_embedded)) +
        ", saved " + (inDollars ? totalUsd(t, "dollars_saved") : int(t.tokens_saved)) +
        ". The numbers are in the Days table.",
    );
    document.getElementById("chart-hits").setAttribute(
      "aria-label",
      "Stacked bar chart of hits and misses per day over " + days.length + " days: " +
        int(t.hits) + " hits, " + int(t.misses) + " misses. The numbers are in the Days table.",
    );
    barChart(
      "chart-dollars",
      [
        { label: "spent", data: days.map((d) => d[spentKey]), backgroundColor: COLORS.spent },
        { label: "saved", data: days.map((d) => d[savedKey]), backgroundColor: COLORS.saved },
      ],
      labels,
      false,
      inDollars ? (v) => usd(v) : (v) => int(v),
    );
    barChart(
      "chart-hits",
      [
        { label: "hits", data: days.map((d) => d.hits), backgroundColor: COLORS.hits },
        { label: "misses", data: days.map((d) => d.misses), backgroundColor: COLORS.misses },
      ],
      labels,
      true,
      (v) => int(v),
    );
  }

  function render(stats, models) {
    const t = stats.total;
    for (const dd of document.querySelectorAll("[data-total]")) {
      dd.textContent = TOTALS[dd.dataset.total](t);
    }
    document.getElementById("estimated-note").hidden =
      !(t.tokens_embedded_estimated || t.tokens_saved_estimated);
    document.getElementById("unpriced-note").hidden = !t.models_without_price;
    document.getElementById("unpriced-count").textContent = String(t.models_without_price);
    fillTable("days", dayRows(stats.days), "no usage recorded");
    fillTable("models", modelRows(models, stats.models), "no namespaces");
    drawCharts(stats);
  }

  // -- polling ------------------------------------------------------------------------

  const status = document.getElementById("status");

  async function get(path) {
    const response = await fetch(boot.prefix + path + query, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) throw new Error("unauthorized");
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  async function refresh() {
    try {
      const [stats, models] = await Promise.all([get("/api/stats"), get("/api/models")]);
      render(stats, models);
      refreshes += 1;
      document.body.dataset.refreshes = String(refreshes);
      document.getElementById("updated").textContent =
        "Updated " + new Date().toLocaleTimeString() + "; refreshes every " +
        boot.refresh_seconds + " s.";
      status.textContent = "";
    } catch (error) {
      if (error.message === "unauthorized") {
        status.textContent = "Logged out: reload the page to log in again.";
        return; // stop polling
      }
      status.textContent = "Refresh failed (" + error.message + "); retrying.";
    }
    setTimeout(refresh, boot.refresh_seconds * 1000);
  }

  drawCharts(boot.stats);
  setTimeout(refresh, boot.refresh_seconds * 1000);
})();
