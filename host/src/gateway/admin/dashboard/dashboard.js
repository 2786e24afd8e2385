// The tollgate dashboard: polls /admin/dashboard/data and draws it with
// plain DOM and SVG. No inline code and no third-party script, so the page's
// content security policy can allow this origin alone.
'use strict';

(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const POLL_MS = 2000;
  const DECISIONS = ['admit', 'downgrade', 'throttle', 'reject', 'invalid'];
  const DECISION_COLORS = ['#16a34a', '#2563eb', '#f59e0b', '#dc2626', '#9ca3af'];
  const TENANT_COLORS = ['#2563eb', '#9333ea', '#0d9488', '#ea580c', '#db2777', '#65a30d', '#0891b2', '#a16207'];
  const view = { minutes: 60, last: null, updates: 0 };

  const $ = (selector, root = document) => root.querySelector(selector);

  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Money arrives as integer nano-dollars.
  function usd(nano) {
    const d = nano / 1e9;
    if (d === 0) return '$0';
    if (d >= 100) return '$' + Math.round(d).toLocaleString('en-US');
    if (d >= 1) return '$' + d.toFixed(2);
    if (d >= 0.01) return '$' + d.toFixed(4);
    return '$' + d.toPrecision(2);
  }

  const pct = (part, whole) => (whole > 0 ? Math.round((100 * part) / whole) + '%' : '–');
  const clock = (ms) => new Date(ms).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
  const stamp = (ms) => new Date(ms).toLocaleString('en-GB', { hour12: false });

  function level(name) {
    return el('span', { class: 'level ' + name, 'data-level': name }, name);
  }

  function tenantColor(data, name) {
    const i = data.tenants.findIndex((t) => t.tenant === name);
    return TENANT_COLORS[(i < 0 ? 0 : i) % TENANT_COLORS.length];
  }

  function selected(data) {
    const wanted = decodeURIComponent((location.hash.match(/tenant=([^&]+)/) || [])[1] || '');
    if (data.tenants.some((t) => t.tenant === wanted)) return wanted;
    const order = ['red', 'orange', 'yellow', 'green'];
    const sorted = [...data.tenants].sort((a, b) => order.indexOf(a.alert) - order.indexOf(b.alert));
    return sorted.length ? sorted[0].tenant : null;
  }

  // Cumulative spend over the window: points [time, nano-dollars].
  function trajectory(t, data) {
    const start = data['now-ms'] - data.minutes * 60000;
    const minutes = t.series.minutes;
    const inWindow = minutes.reduce((sum, m) => sum + m['cost-nano-usd'], 0);
    let total = Math.max(0, t['spent-nano-usd'] - inWindow);
    const points = [[start, total]];
    for (const m of minutes) {
      points.push([Math.max(start, m['at-ms']), total]);
      total += m['cost-nano-usd'];
      points.push([Math.min(data['now-ms'], m['at-ms'] + 60000), total]);
    }
    points.push([data['now-ms'], t['spent-nano-usd']]);
    return points;
  }

  function sparkline(points, color) {
    const w = 120, h = 28;
    const box = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: 'spark' });
    const x0 = points[0][0], x1 = points[points.length - 1][0];
    const y0 = points[0][1], y1 = Math.max(...points.map((p) => p[1]));
    const sx = (x) => ((x - x0) / Math.max(1, x1 - x0)) * (w - 2) + 1;
    const sy = (y) => h - 2 - ((y - y0) / Math.max(1, y1 - y0)) * (h - 4);
    box.append(svg('polyline', { points: points.map((p) => `${sx(p[0])},${sy(p[1])}`).join(' '), fill: 'none', stroke: color, 'stroke-width': 1.5 }));
    return box;
  }

  // A line chart: lines of [time, value] points, each {name, color, points, dash}.
  function lineChart(host, lines, x0, x1, opts = {}) {
    const w = Math.max(280, host.clientWidth || 480), h = opts.height || 160;
    const pad = { l: 64, r: 10, t: 10, b: 22 };
    const values = lines.flatMap((l) => l.points.map((p) => p[1]));
    // A floor of $0.0001, so an idle chart does not scale up nano-dollars.
    const top = Math.max(1e5, ...values) * 1.1;
    const sx = (x) => pad.l + ((x - x0) / Math.max(1, x1 - x0)) * (w - pad.l - pad.r);
    const sy = (y) => h - pad.b - (y / top) * (h - pad.t - pad.b);
    const box = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}` });
    for (let i = 0; i <= 4; i++) {
      const y = (top * i) / 4;
      box.append(svg('line', { x1: pad.l, x2: w - pad.r, y1: sy(y), y2: sy(y), class: 'grid' }));
      box.append(svg('text', { x: pad.l - 6, y: sy(y) + 4, 'text-anchor': 'end', class: 'tick' }, (opts.format || usd)(y)));
    }
    for (let i = 0; i <= 4; i++) {
      const x = x0 + ((x1 - x0) * i) / 4;
      box.append(svg('text', { x: sx(x), y: h - 6, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle', class: 'tick' }, clock(x)));
    }
    if (opts.now) box.append(svg('line', { x1: sx(opts.now), x2: sx(opts.now), y1: pad.t, y2: h - pad.b, class: 'now' }));
    for (const line of lines) {
      const attrs = { points: line.points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' '), fill: 'none', stroke: line.color, 'stroke-width': 2 };
      if (line.dash) attrs['stroke-dasharray'] = '6 4';
      box.append(svg('polyline', attrs));
    }
    host.replaceChildren(box);
  }

  // Calls per minute, stacked by verdict.
  function decisionChart(host, minutes, x0, x1) {
    // Through the end of the current minute, so its bar is drawn whole.
    x1 = Math.max(x1, ...minutes.map((m) => m['at-ms'] + 60000));
    const w = Math.max(280, host.clientWidth || 480), h = 160;
    const pad = { l: 40, r: 10, t: 10, b: 22 };
    const top = Math.max(1, ...minutes.map((m) => m.decisions.reduce((a, b) => a + b, 0))) * 1.1;
    const span = Math.max(1, x1 - x0);
    const sx = (x) => pad.l + ((x - x0) / span) * (w - pad.l - pad.r);
    const sy = (y) => h - pad.b - (y / top) * (h - pad.t - pad.b);
    const barW = Math.max(1, ((w - pad.l - pad.r) * 60000) / span - 1);
    const box = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}` });
    for (let i = 0; i <= 4; i++) {
      const y = (top * i) / 4;
      box.append(svg('line', { x1: pad.l, x2: w - pad.r, y1: sy(y), y2: sy(y), class: 'grid' }));
      box.append(svg('text', { x: pad.l - 6, y: sy(y) + 4, 'text-anchor': 'end', class: 'tick' }, Math.round(y)));
    }
    for (let i = 0; i <= 4; i++) {
      const x = x0 + (span * i) / 4;
      box.append(svg('text', { x: sx(x), y: h - 6, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle', class: 'tick' }, clock(x)));
    }
    for (const m of minutes) {
      let base = 0;
      m.decisions.forEach((count, i) => {
        if (!count) return;
        const y = sy(base + count), bottom = sy(base);
        box.append(svg('rect', { x: sx(m['at-ms']), y, width: barW, height: Math.max(0.5, bottom - y), fill: DECISION_COLORS[i] }, undefined));
        base += count;
      });
    }
    host.replaceChildren(box);
  }

  function legend(host, items) {
    host.replaceChildren(...items.map(([name, color, dash]) => {
      const item = el('span', { class: 'key' });
      const swatch = el('i', { class: dash ? 'swatch dash' : 'swatch' });
      swatch.style.borderColor = color;
      swatch.style.backgroundColor = dash ? 'transparent' : color;
      item.append(swatch, document.createTextNode(name));
      return item;
    }));
  }

  function meter(t) {
    const bar = el('div', { class: 'meter', title: `${usd(t['spent-nano-usd'])} spent, ${usd(t['reserved-nano-usd'])} held` });
    const budget = t['budget-nano-usd'];
    const spent = el('span', { class: 'spent ' + t.alert });
    const held = el('span', { class: 'held' });
    spent.style.width = budget > 0 ? Math.min(100, (100 * t['spent-nano-usd']) / budget) + '%' : '0';
    held.style.width = budget > 0 ? Math.min(100, (100 * t['reserved-nano-usd']) / budget) + '%' : '0';
    bar.append(spent, held);
    return bar;
  }

  function renderTenants(data, current) {
    const rows = data.tenants.map((t) => {
      const calls = t.series.minutes.reduce((sum, m) => sum + m.calls, 0);
      const tr = el('tr', {
        'data-tenant': t.tenant, 'data-level': t.alert, 'data-spent-nano': t['spent-nano-usd'], 'data-calls': calls,
        class: t.tenant === current ? 'current' : '',
      });
      const name = el('td', { class: 'name' }, t.tenant);
      if (t.disabled) name.append(el('span', { class: 'tag' }, 'disabled'));
      const spend = el('td', { class: 'wide' });
      spend.append(el('div', { class: 'figures' }, `${usd(t['spent-nano-usd'])} / ${usd(t['budget-nano-usd'])} · ${pct(t['spent-nano-usd'], t['budget-nano-usd'])}`), meter(t));
      const burn = `${usd(t['burn-rate-short'])} · ${usd(t['burn-rate-long'])} · ${t['baseline-burn-rate'] ? usd(t['baseline-burn-rate']) : '–'}`;
      const forecast = `${usd(t['forecast-spend'])} (${pct(t['forecast-spend'], t['budget-nano-usd'])})`;
      const spark = el('td');
      spark.append(sparkline(trajectory(t, data), tenantColor(data, t.tenant)));
      const alert = el('td');
      alert.append(level(t.alert));
      tr.append(name, el('td', {}, t.tier || '–'), alert, spend, el('td', {}, usd(t['reserved-nano-usd'])),
        el('td', {}, burn), el('td', {}, forecast), el('td', { class: 'mono' }, t['policy-version'] || '–'), spark);
      tr.addEventListener('click', () => { location.hash = 'tenant=' + encodeURIComponent(t.tenant); });
      return tr;
    });
    $('[data-tenants]').replaceChildren(...rows);
  }

  function renderOverview(data) {
    const x0 = data['now-ms'] - data.minutes * 60000, x1 = data['now-ms'];
    const lines = data.tenants.map((t) => ({ name: t.tenant, color: tenantColor(data, t.tenant), points: trajectory(t, data) }));
    lineChart($('[data-chart="spend-all"]'), lines, x0, x1);
    legend($('[data-legend="spend-all"]'), lines.map((l) => [l.name, l.color]));
    const byMinute = new Map();
    for (const t of data.tenants) {
      for (const m of t.series.minutes) {
        const sum = byMinute.get(m['at-ms']) || { 'at-ms': m['at-ms'], decisions: [0, 0, 0, 0, 0] };
        m.decisions.forEach((c, i) => { sum.decisions[i] += c; });
        byMinute.set(m['at-ms'], sum);
      }
    }
    decisionChart($('[data-chart="decisions-all"]'), [...byMinute.values()], x0, x1);
    legend($('[data-legend="decisions-all"]'), DECISIONS.map((d, i) => [d, DECISION_COLORS[i]]));
  }

  function renderTop(host, top) {
    const rows = [...top.top];
    if (top.other.calls > 0) rows.push(top.other);
    const most = Math.max(1, ...rows.map((r) => r['cost-nano-usd']));
    if (!rows.length) {
      host.replaceChildren(el('p', { class: 'muted' }, 'no calls in the last 24 h'));
      return;
    }
    host.replaceChildren(...rows.map((r) => {
      const row = el('div', { class: 'bar-row', 'data-name': r.name });
      const fill = el('span', { class: r === top.other ? 'fill other' : 'fill' });
      fill.style.width = Math.max(1, (100 * r['cost-nano-usd']) / most) + '%';
      const track = el('div', { class: 'track' });
      track.append(fill);
      row.append(el('span', { class: 'label', title: r.name }, r.name), track, el('span', { class: 'value' }, `${usd(r['cost-nano-usd'])} · ${r.calls}`));
      return row;
    }));
  }

  function renderDetail(data, name) {
    const t = data.tenants.find((x) => x.tenant === name);
    const detail = $('[data-detail]');
    detail.hidden = !t;
    if (!t) return;
    detail.setAttribute('data-detail-tenant', t.tenant);
    $('[data-detail-name]').textContent = t.tenant;
    $('[data-detail-level]').replaceChildren(level(t.alert));
    const activations = t.activations.length ? ' · activations v' + t.activations.join(' → v') : '';
    $('[data-detail-facts]').textContent = `${t.tier || 'no tier'} · ${t.period} budget ${usd(t['budget-nano-usd'])} · period ends ${stamp(t['period-end-ms'])} · policy ${t['policy-version'] || '–'}${activations}`;

    const now = data['now-ms'], x0 = now - data.minutes * 60000, x1 = now + (data.minutes * 60000) / 3;
    const spend = trajectory(t, data);
    const projected = t['spent-nano-usd'] + (t['burn-rate-long'] * (x1 - now)) / 3600000;
    const lines = [
      { name: 'spent', color: tenantColor(data, t.tenant), points: spend },
      { name: 'trend (long burn rate)', color: '#6b7280', dash: true, points: [[now, t['spent-nano-usd']], [x1, projected]] },
    ];
    const budget = t['budget-nano-usd'];
    const peak = Math.max(projected, t['spent-nano-usd']);
    const items = [['spent', lines[0].color], [`trend; forecast at period end ${usd(t['forecast-spend'])} (${pct(t['forecast-spend'], budget)} of budget)`, '#6b7280', true]];
    if (budget > 0 && budget <= Math.max(peak * 4, 1)) {
      lines.push({ name: 'budget', color: '#dc2626', dash: true, points: [[x0, budget], [x1, budget]] });
      items.push([`budget ${usd(budget)}`, '#dc2626', true]);
    } else if (budget > 0) {
      items.push([`budget ${usd(budget)} (above the chart)`, '#dc2626', true]);
    }
    lineChart($('[data-chart="spend-one"]'), lines, x0, x1, { now });
    legend($('[data-legend="spend-one"]'), items);
    decisionChart($('[data-chart="decisions-one"]'), t.series.minutes, x0, now);
    renderTop($('[data-top="users"]'), t.series.users);
    renderTop($('[data-top="use-cases"]'), t.series['use-cases']);
  }

  function renderEvents(data) {
    const alerts = data.alerts.map((e) => {
      const li = el('li', { 'data-alert': e.tenant || '*', 'data-to': e.to });
      li.append(el('span', { class: 'when' }, stamp(e['at-ms'])), el('b', {}, e.tenant || 'all tenants'), level(e.from), el('span', {}, '→'), level(e.to), el('span', { class: 'muted' }, e.message));
      return li;
    });
    $('[data-alerts]').replaceChildren(...(alerts.length ? alerts : [el('li', { class: 'muted' }, 'no level changes yet')]));
    const policies = data.policies.map((p) => {
      const li = el('li', { 'data-policy': p.tenant });
      li.append(el('span', { class: 'when' }, stamp(p['created-at-ms'])), el('b', {}, p.tenant), el('span', { class: 'mono' }, p.version), el('span', { class: 'muted', title: p.source }, p.source.split('/').pop()));
      if (p.active) li.append(el('span', { class: 'tag active' }, 'active'));
      if (p.shadow) li.append(el('span', { class: 'tag' }, 'shadow'));
      return li;
    });
    $('[data-policies]').replaceChildren(...(policies.length ? policies : [el('li', { class: 'muted' }, 'no policy versions')]));
  }

  function render(data) {
    view.last = data;
    const current = selected(data);
    const aggregate = $('[data-aggregate-level]');
    aggregate.textContent = data['aggregate-alert'];
    aggregate.className = 'level ' + data['aggregate-alert'];
    aggregate.setAttribute('data-aggregate-level', data['aggregate-alert']);
    renderTenants(data, current);
    renderOverview(data);
    renderDetail(data, current);
    renderEvents(data);
    view.updates += 1;
    document.body.setAttribute('data-updates', String(view.updates));
    document.body.setAttribute('data-minutes', String(data.minutes));
  }

  async function refresh() {
    const status = $('[data-status]');
    try {
      const response = await fetch(`/admin/dashboard/data?minutes=${view.minutes}`, { credentials: 'same-origin', cache: 'no-store' });
      // The session ended: the page itself now answers with the sign-in form.
      if (response.status === 401) {
        location.reload();
        return;
      }
      if (!response.ok) throw new Error(`${response.status} ${(await response.text()).slice(0, 200)}`);
      render(await response.json());
      status.textContent = 'live · ' + new Date().toLocaleTimeString('en-GB', { hour12: false });
      status.className = 'muted';
    } catch (error) {
      status.textContent = 'not updating: ' + error.message;
      status.className = 'error';
    }
    setTimeout(refresh, POLL_MS);
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('[data-window]').addEventListener('change', (event) => {
      // The next poll asks for the new window.
      view.minutes = Number(event.target.value);
    });
    $('[data-sign-out]').addEventListener('click', async () => {
      await fetch('/admin/dashboard/session', { method: 'DELETE', credentials: 'same-origin' });
      location.reload();
    });
    window.addEventListener('hashchange', () => { if (view.last) render(view.last); });
    window.addEventListener('resize', () => { if (view.last) render(view.last); });
    refresh();
  });
})();
