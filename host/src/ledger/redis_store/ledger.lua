-- tollgate's ledger, one tenant's operations, each atomic inside Redis.
-- The rules are those of the in-memory book (host/src/ledger/book.rs); the
-- host computes the calendar (period bounds in the tenant's time zone) and
-- passes it in, so Lua never deals with time zones.
--
-- Every key is the tenant's and carries its hash tag, so a tenant's data sits
-- in one slot of a Redis Cluster:
--   KEYS[1] state   HASH  reserved exposure basis pstart pend wmin wreq wtok seq
--   KEYS[2] open    HASH  id -> "cost over tokens minute pstart expires owner"
--   KEYS[3] exp     ZSET  id by expiry
--   KEYS[4] periods HASH  "<pstart>:spent|tokens|calls|end"
--   KEYS[5] pidx    ZSET  period starts
--   KEYS[6] expired HASH  id -> open record of a reservation that expired, then when
--   KEYS[7] expidx  ZSET  id by expiry time (bounds the memory)
--   KEYS[8] done    HASH  id -> outcome of a closed reservation, for retries
--   KEYS[9] doneidx ZSET  id by close time (bounds the memory)
--   KEYS[10] burnm  HASH  minute -> spend settled in it (the burn rates)
--   KEYS[11] burnh  HASH  hour -> spend settled in it (the baseline)
--   KEYS[12] amendidx ZSET  id by charge time, of adopters' charges a first
--                          owner may amend (in done, bounded apart from it)
-- ARGV: op, now_ms, basis, period start, period end, then the op's own.
--
-- A hold names the replica that took it (its owner, 'r' and hex digits).
-- When an owner stops renewing its lease, another replica adopts its holds
-- ('adopt') and charges them: the calls may have run, and no settle will
-- come. Holds written before owners existed have none and are never adopted.
-- An adopted hold is marked in the state hash ("adopted:<id>" -> adopter).
-- Its first owner may yet be alive (cut off from Redis past its lease) or
-- restart with the call's outcome in its journal: that outcome, the only
-- one that knows the usage, then amends the adopter's charge, once.
--
-- Money is never a Lua number (a double): amounts stay decimal strings,
-- change with HINCRBY (exact 64-bit integers), and are compared as two
-- exact halves.

local STATE, OPEN, EXP, PERIODS, PIDX, EXPIRED, EXPIDX, DONE, DONEIDX, BURNM, BURNH, AMENDIDX =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local op = ARGV[1]
local now = tonumber(ARGV[2])

local HISTORY_CAP = 400
local EXPIRED_MEMORY = 1024
local DONE_MEMORY = 2048
-- Adopters' charges wait for their first owners apart from the other
-- outcomes: a busy tenant's next 2048 calls must not push one out, or the
-- owner's usage, when it comes, could no longer replace the hold's charge.
local AMEND_MEMORY = 1024
local MINUTE_MS = 60000

local function int(n)
  return string.format('%.0f', n)
end

-- A decimal string as {high, low} with low the last nine digits: both halves
-- are exact in a double for any 64-bit amount.
local function big(s)
  s = s or '0'
  local n = #s
  if n <= 9 then
    return { 0, tonumber(s) }
  end
  return { tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8)) }
end

local function add(a, b)
  local low = a[2] + b[2]
  local carry = math.floor(low / 1000000000)
  return { a[1] + b[1] + carry, low - carry * 1000000000 }
end

local function greater(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2])
end

local function text(a)
  if a[1] == 0 then
    return int(a[2])
  end
  return int(a[1]) .. string.format('%09.0f', a[2])
end

local function incr(key, field, amount)
  if amount ~= '0' then
    redis.call('HINCRBY', key, field, amount)
  end
end

local function decr(key, field, amount)
  if amount ~= '0' then
    redis.call('HINCRBY', key, field, '-' .. amount)
  end
end

local function fields(rec)
  local f = {}
  for word in string.gmatch(rec, '%S+') do
    f[#f + 1] = word
  end
  -- cost, over, tokens, minute, pstart, expires[, owner][, expired_at]
  return f
end

-- The owner of a record, or nil for a hold that has none.
local function owner(f)
  if f[7] and string.sub(f[7], 1, 1) == 'r' then
    return f[7]
  end
  return nil
end

-- Keeps `index` (and its hash) to `cap` members, dropping the oldest, and
-- any adoption mark of theirs (an expired hold dropped before it was charged).
local function bound(hash, index, cap)
  local extra = redis.call('ZCARD', index) - cap
  if extra > 0 then
    local old = redis.call('ZPOPMIN', index, extra)
    for i = 1, #old, 2 do
      redis.call('HDEL', hash, old[i])
      if hash == EXPIRED then
        redis.call('HDEL', STATE, 'adopted:' .. old[i])
      end
    end
  end
end

-- Replaces a call's estimated tokens in its minute's window by its real ones
-- (the estimate taken off at most down to 0, as the book's saturating sub).
local function correct(minute, estimated, actual)
  local wmin = redis.call('HGET', STATE, 'wmin')
  if wmin == minute then
    local after = tonumber(redis.call('HGET', STATE, 'wtok') or '0') - tonumber(estimated)
    if after < 0 then
      after = 0
    end
    redis.call('HSET', STATE, 'wtok', int(after + tonumber(actual)))
  end
end

-- Takes a reservation out of the open set and its hold off the figures.
local function close(id, f)
  redis.call('HDEL', OPEN, id)
  redis.call('ZREM', EXP, id)
  decr(STATE, 'reserved', f[1])
  decr(STATE, 'exposure', f[2])
end

local function expire()
  local ids = redis.call('ZRANGEBYSCORE', EXP, '-inf', now)
  for _, id in ipairs(ids) do
    local rec = redis.call('HGET', OPEN, id)
    if rec then
      local f = fields(rec)
      close(id, f)
      correct(f[4], f[3], '0')
      redis.call('HSET', EXPIRED, id, rec .. ' ' .. f[6])
      redis.call('ZADD', EXPIDX, f[6], id)
    else
      redis.call('ZREM', EXP, id)
    end
  end
  bound(EXPIRED, EXPIDX, EXPIRED_MEMORY)
  return #ids
end

-- A new period when `now` has passed the current one's end, or the limits
-- changed its kind or time zone; never back in time.
local function roll_period()
  local basis, start, stop = ARGV[3], ARGV[4], ARGV[5]
  local cur = redis.call('HMGET', STATE, 'basis', 'pstart', 'pend')
  if cur[1] == basis then
    if now < tonumber(cur[3]) or tonumber(start) <= tonumber(cur[2]) then
      return
    end
  end
  redis.call('HSET', STATE, 'basis', basis, 'pstart', start, 'pend', stop)
  redis.call('HSET', PERIODS, start .. ':end', stop)
  redis.call('ZADD', PIDX, start, start)
  local extra = redis.call('ZCARD', PIDX) - (HISTORY_CAP + 1)
  if extra > 0 then
    local old = redis.call('ZPOPMIN', PIDX, extra)
    for i = 1, #old, 2 do
      local p = old[i]
      redis.call('HDEL', PERIODS, p .. ':spent', p .. ':tokens', p .. ':calls', p .. ':end')
    end
  end
end

local function advance()
  local minute = math.floor(now / MINUTE_MS)
  local wmin = tonumber(redis.call('HGET', STATE, 'wmin') or '-1')
  if minute > wmin then
    redis.call('HSET', STATE, 'wmin', int(minute), 'wreq', '0', 'wtok', '0')
  end
end

local function catch_up()
  roll_period()
  expire()
  advance()
end

local function figures()
  local s = redis.call('HMGET', STATE, 'reserved', 'exposure', 'pstart', 'pend', 'wmin', 'wreq', 'wtok')
  for i = 1, 7 do
    s[i] = s[i] or '0'
  end
  return s
end

local function remember(id, outcome)
  redis.call('HSET', DONE, id, outcome)
  redis.call('ZADD', DONEIDX, now, id)
  bound(DONE, DONEIDX, DONE_MEMORY)
end

-- An adopter's charge of a hold, kept for its first owner's outcome.
local function remember_amendable(id, outcome)
  redis.call('HSET', DONE, id, outcome)
  redis.call('ZADD', AMENDIDX, now, id)
  bound(DONE, AMENDIDX, AMEND_MEMORY)
end

-- The adopter of a hold, if it was adopted; forgotten as the hold closes.
local function adopter(id)
  local key = 'adopted:' .. id
  local who = redis.call('HGET', STATE, key)
  if who then
    redis.call('HDEL', STATE, key)
  end
  return who
end

-- Moves `field` from `old` to `new`, exactly (two integer steps, no Lua number).
local function shift(key, field, old, new)
  incr(key, field, new)
  decr(key, field, old)
end

-- A charge the adopter made of a hold, replaced by the first owner's outcome:
-- `cost` and `tokens` for a settle, nothing (and one call fewer) for a release.
-- The adopter's outcome is "settled held late cost pstart pspent r adopter tokens minute".
local function amend(id, d, cost, tokens)
  local p, minute = d[5], d[10]
  -- A period no longer kept keeps its figures: there is nothing left to correct.
  if redis.call('HEXISTS', PERIODS, p .. ':end') == 1 then
    shift(PERIODS, p .. ':spent', d[4], cost or '0')
    shift(PERIODS, p .. ':tokens', d[9], tokens or '0')
    if not cost then
      redis.call('HINCRBY', PERIODS, p .. ':calls', -1)
    end
  end
  local hour = int(math.floor(tonumber(minute) / 60))
  for _, bucket in ipairs({ { BURNM, minute }, { BURNH, hour } }) do
    if redis.call('HEXISTS', bucket[1], bucket[2]) == 1 then
      shift(bucket[1], bucket[2], d[4], cost or '0')
    end
  end
  local outcome
  if cost then
    local pspent = redis.call('HGET', PERIODS, p .. ':spent') or '0'
    outcome = table.concat({ 'settled', d[2], d[3], cost, p, pspent, 'amended', d[4] }, ' ')
  else
    outcome = table.concat({ 'released', d[2], 'amended', d[4] }, ' ')
  end
  redis.call('ZREM', AMENDIDX, id)
  remember(id, outcome)
  return { 'ok', outcome }
end

-- The outcome an adopter's charge left that the first owner may amend, if any.
local function amendable(id, caller)
  local done = redis.call('HGET', DONE, id)
  if not done then
    return nil
  end
  local d = fields(done)
  if d[1] == 'settled' and d[7] == 'r' and d[8] ~= caller then
    return d
  end
  return nil
end

if op == 'reserve' then
  -- ARGV[6..14]: cost, over (ceiling - cost), tokens, ttl, budget, rpm, tpm ('' for none),
  -- a random first id for a tenant's first hold, and the owner
  local cost, over, tokens, ttl, budget, rpm, tpm = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
  catch_up()
  local s = figures()
  local spent = redis.call('HGET', PERIODS, s[3] .. ':spent') or '0'
  local held = add(big(s[1]), big(s[2]))
  local ceiling = add(big(cost), big(over))
  -- Every open call counted at the most it can cost.
  if greater(add(add(big(spent), held), ceiling), big(budget)) then
    return { 'budget', spent, text(held), text(ceiling), s[4] }
  end
  local retry = int((tonumber(s[5]) + 1) * MINUTE_MS - now)
  if tpm ~= '' and tonumber(s[7]) + tonumber(tokens) > tonumber(tpm) then
    return { 'tpm', tpm, s[7], tokens, retry }
  end
  if rpm ~= '' and tonumber(s[6]) >= tonumber(rpm) then
    return { 'rpm', rpm, s[6], retry }
  end
  -- Each tenant's ids start at a random point, so another tenant's id is
  -- (almost surely) no id here: settling it under the wrong tenant finds nothing.
  redis.call('HSETNX', STATE, 'seq', ARGV[13])
  local id = int(redis.call('HINCRBY', STATE, 'seq', 1))
  local expires = int(now + tonumber(ttl))
  redis.call('HSET', OPEN, id, table.concat({ cost, over, tokens, s[5], s[3], expires, ARGV[14] }, ' '))
  redis.call('ZADD', EXP, expires, id)
  incr(STATE, 'reserved', cost)
  incr(STATE, 'exposure', over)
  redis.call('HINCRBY', STATE, 'wreq', 1)
  incr(STATE, 'wtok', tokens)
  return { 'ok', id, s[3], expires }
end

if op == 'settle' then
  -- ARGV[6..10]: id, cost, tokens, retry ('1' when an earlier attempt's
  -- answer was lost), and the settling replica's owner id
  local id, cost, tokens, retry, caller = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10] or ''
  catch_up()
  local rec = redis.call('HGET', OPEN, id)
  local late = '0'
  local f
  if rec then
    f = fields(rec)
    close(id, f)
  else
    local adopted = amendable(id, caller)
    if adopted then
      return amend(id, adopted, cost, tokens)
    end
    local done = redis.call('HGET', DONE, id)
    if done and retry == '1' then
      return { 'again', done }
    end
    rec = redis.call('HGET', EXPIRED, id)
    if not rec then
      return { 'unknown' }
    end
    -- A call that outlived its hold still ran: it is charged, never free.
    f = fields(rec)
    redis.call('HDEL', EXPIRED, id)
    redis.call('ZREM', EXPIDX, id)
    late = '1'
  end
  correct(f[4], f[3], tokens)
  -- Charged to the period that admitted it, while that period is kept.
  local p = f[5]
  if redis.call('HEXISTS', PERIODS, p .. ':end') == 0 then
    p = redis.call('HGET', STATE, 'pstart')
  end
  redis.call('HINCRBY', PERIODS, p .. ':spent', cost)
  incr(PERIODS, p .. ':tokens', tokens)
  redis.call('HINCRBY', PERIODS, p .. ':calls', 1)
  local pspent = redis.call('HGET', PERIODS, p .. ':spent')
  -- Spend by when it was settled: every replica's burn rates read the same series.
  incr(BURNM, int(math.floor(now / MINUTE_MS)), cost)
  incr(BURNH, int(math.floor(now / 3600000)), cost)
  local held = f[1]
  if late == '1' then
    held = '0'
  end
  local outcome = table.concat({ 'settled', held, late, cost, p, pspent }, ' ')
  if adopter(id) == caller then
    -- The adopter's charge of the hold: the first owner's outcome may amend it.
    outcome = table.concat({ outcome, 'r', caller, tokens, int(math.floor(now / MINUTE_MS)) }, ' ')
    remember_amendable(id, outcome)
  else
    remember(id, outcome)
  end
  return { 'ok', outcome }
end

if op == 'charge' then
  -- A call admitted on a replica's local allowance while Redis was away,
  -- written now. ARGV[6..8]: charge id (unique per replica), cost, tokens.
  local cid, cost, tokens = ARGV[6], ARGV[7], ARGV[8]
  catch_up()
  local done = redis.call('HGET', DONE, cid)
  if done then
    return { 'again', done }
  end
  local p = redis.call('HGET', STATE, 'pstart')
  redis.call('HINCRBY', PERIODS, p .. ':spent', cost)
  incr(PERIODS, p .. ':tokens', tokens)
  redis.call('HINCRBY', PERIODS, p .. ':calls', 1)
  incr(BURNM, int(math.floor(now / MINUTE_MS)), cost)
  incr(BURNH, int(math.floor(now / 3600000)), cost)
  local outcome = table.concat({ 'settled', '0', '0', cost, p, redis.call('HGET', PERIODS, p .. ':spent') }, ' ')
  remember(cid, outcome)
  return { 'ok', outcome }
end

if op == 'release' then
  -- ARGV[6..8]: id, retry, and the releasing replica's owner id
  local id, retry, caller = ARGV[6], ARGV[7], ARGV[8] or ''
  catch_up()
  local rec = redis.call('HGET', OPEN, id)
  if not rec then
    -- The call never ran, yet its hold was adopted and charged: that charge is undone.
    local adopted = amendable(id, caller)
    if adopted then
      return amend(id, adopted, nil, nil)
    end
    local done = redis.call('HGET', DONE, id)
    if done and retry == '1' then
      return { 'again', done }
    end
    local expired = redis.call('HGET', EXPIRED, id)
    if expired then
      -- The call provably never ran: nothing may charge it later (a late settle, an adoption).
      redis.call('HDEL', EXPIRED, id)
      adopter(id)
      redis.call('ZREM', EXPIDX, id)
      local e = fields(expired)
      return { 'expired', e[#e] }
    end
    return { 'unknown' }
  end
  local f = fields(rec)
  close(id, f)
  adopter(id)
  correct(f[4], f[3], '0')
  local outcome = 'released ' .. f[1]
  remember(id, outcome)
  return { 'ok', outcome }
end

if op == 'load' then
  catch_up()
  local s = figures()
  local p = redis.call('HMGET', PERIODS, s[3] .. ':spent', s[3] .. ':tokens')
  return { p[1] or '0', s[1], tostring(redis.call('HLEN', OPEN)), s[3], s[4], s[6], s[7], p[2] or '0' }
end

if op == 'expire' then
  return expire()
end

if op == 'owners' then
  -- ARGV[6]: the caller's owner id. Every other owner with a hold open or
  -- expired, for the caller to check their leases.
  local out, seen = {}, {}
  for _, hash in ipairs({ OPEN, EXPIRED }) do
    for _, rec in ipairs(redis.call('HVALS', hash)) do
      local o = owner(fields(rec))
      if o and o ~= ARGV[6] and not seen[o] then
        seen[o] = true
        out[#out + 1] = o
      end
    end
  end
  return out
end

if op == 'adopt' then
  -- ARGV[6]: the adopting owner; ARGV[7..]: owners whose leases lapsed.
  -- Their holds, open or expired, become the adopter's, which charges each
  -- by a settle under its id (so the charge lands once, whoever retries).
  -- Answers "id cost tokens" per hold adopted.
  local dead = {}
  for i = 7, #ARGV do
    dead[ARGV[i]] = true
  end
  local out = {}
  for _, hash in ipairs({ OPEN, EXPIRED }) do
    local flat = redis.call('HGETALL', hash)
    for i = 1, #flat, 2 do
      local f = fields(flat[i + 1])
      local o = owner(f)
      if o and dead[o] then
        f[7] = ARGV[6]
        redis.call('HSET', hash, flat[i], table.concat(f, ' '))
        redis.call('HSET', STATE, 'adopted:' .. flat[i], ARGV[6])
        out[#out + 1] = table.concat({ flat[i], f[1], f[3] }, ' ')
      end
    end
  end
  return out
end

if op == 'history' then
  local out = {}
  for _, p in ipairs(redis.call('ZRANGE', PIDX, 0, -1)) do
    local v = redis.call('HMGET', PERIODS, p .. ':end', p .. ':spent', p .. ':tokens', p .. ':calls')
    out[#out + 1] = table.concat({ p, v[1] or '0', v[2] or '0', v[3] or '0', v[4] or '0' }, ' ')
  end
  return out
end

if op == 'burn' then
  -- ARGV[6..7]: minutes and hours to keep; older buckets are dropped here.
  local out = {}
  for i, spec in ipairs({ { BURNM, MINUTE_MS, ARGV[6] }, { BURNH, 3600000, ARGV[7] } }) do
    local oldest = math.floor(now / spec[2]) - tonumber(spec[3])
    local flat = redis.call('HGETALL', spec[1])
    local kept = {}
    for j = 1, #flat, 2 do
      if tonumber(flat[j]) <= oldest then
        redis.call('HDEL', spec[1], flat[j])
      else
        kept[#kept + 1] = flat[j] .. ' ' .. flat[j + 1]
      end
    end
    out[i] = kept
  end
  return out
end

return redis.error_reply('tollgate ledger: unknown operation ' .. tostring(op))
