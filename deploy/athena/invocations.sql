-- Athena (Presto/Trino) tables over tollgate's invocation log and Bedrock's
-- model-invocation logs, and one view that reads both as a single table.
--
-- Replace before running:
--   s3://YOUR-BUCKET/tollgate/                    where tollgate's JSONL logs are shipped
--   s3://YOUR-BUCKET/AWSLogs/ACCOUNT/BedrockModelInvocationLogs/REGION/
--                                                 where Bedrock delivers its logs
--
-- Money: tollgate's rows carry the exact charge (cost_nano_usd, integer
-- nano-dollars, as the ledger charged it). Bedrock's rows carry tokens only;
-- `tollgate report --bedrock-logs` prices them with the catalog, cache
-- tokens and tiers included. Sum nano-dollars as BIGINT and divide by 1e9
-- only for display.
--
-- One call that went through tollgate appears in both logs under the same
-- request id (tollgate logs Bedrock's). The view keeps tollgate's row and
-- adds Bedrock's rows that tollgate never saw: calls that bypassed the
-- gateway, which are worth a look on their own.

CREATE EXTERNAL TABLE IF NOT EXISTS tollgate_invocations (
  schematype     string,
  schemaversion  string,
  ts             string,
  requestid      string,
  operation      string,
  modelid        string,
  input          struct<inputtokencount: bigint,
                        cachereadinputtokencount: bigint,
                        cachewriteinputtokencount: bigint>,
  output         struct<outputtokencount: bigint>,
  requestmetadata map<string, string>,
  tollgate       struct<
    requestid: string,
    tenant: string,
    `user`: string,
    usecase: string,
    decision: string,
    reason: string,
    policyversion: string,
    policyfailure: string,
    requestedmodelid: string,
    servedmodelid: string,
    estimatedinputtokens: bigint,
    maxoutputtokens: bigint,
    reservednanousd: bigint,
    costnanousd: bigint,
    chargedfrom: string,
    holdexpired: boolean,
    status: int,
    errortype: string,
    billing: struct<
      region: string,
      pricebook: string,
      basemodel: string,
      servicetier: string,
      latency: string,
      longcontext: boolean,
      unitprices: struct<input: bigint, output: bigint, cacheread: bigint,
                         cachewrite5m: bigint, cachewrite1h: bigint>,
      usage: struct<input: bigint, output: bigint, cacheread: bigint,
                    cachewrite5m: bigint, cachewrite1h: bigint>>,
    latency: struct<decisionus: bigint, gatewayus: bigint,
                    upstreamms: bigint, totalms: bigint>>
)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES (
  'case.insensitive' = 'true',
  'mapping.ts' = 'timestamp',
  'ignore.malformed.json' = 'true'
)
LOCATION 's3://YOUR-BUCKET/tollgate/';

CREATE EXTERNAL TABLE IF NOT EXISTS bedrock_invocations (
  schematype     string,
  schemaversion  string,
  ts             string,
  accountid      string,
  region         string,
  requestid      string,
  operation      string,
  modelid        string,
  identity       struct<arn: string>,
  input          struct<inputcontenttype: string,
                        inputtokencount: bigint,
                        cachereadinputtokencount: bigint,
                        cachewriteinputtokencount: bigint>,
  output         struct<outputcontenttype: string,
                        outputtokencount: bigint>,
  requestmetadata map<string, string>
)
PARTITIONED BY (day string, hour string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES (
  'case.insensitive' = 'true',
  'mapping.ts' = 'timestamp',
  'ignore.malformed.json' = 'true'
)
LOCATION 's3://YOUR-BUCKET/AWSLogs/ACCOUNT/BedrockModelInvocationLogs/REGION/'
-- Partition projection: Bedrock writes yyyy/mm/dd/hh folders, so no crawler
-- or MSCK REPAIR is needed.
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.day.type' = 'date',
  'projection.day.format' = 'yyyy/MM/dd',
  'projection.day.range' = 'NOW-2YEARS,NOW',
  'projection.day.interval' = '1',
  'projection.day.interval.unit' = 'DAYS',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = 's3://YOUR-BUCKET/AWSLogs/ACCOUNT/BedrockModelInvocationLogs/REGION/${day}/${hour}'
);

CREATE OR REPLACE VIEW invocations AS
SELECT
  'tollgate'                                  AS source,
  from_iso8601_timestamp(t.ts)                AS at,
  t.requestid                                 AS request_id,
  t.operation                                 AS operation,
  t.tollgate.tenant                           AS tenant,
  t.tollgate."user"                           AS user_id,
  t.tollgate.usecase                          AS use_case,
  t.tollgate.decision                         AS decision,
  t.tollgate.requestedmodelid                 AS requested_model_id,
  t.modelid                                   AS model_id,
  t.input.inputtokencount                     AS input_tokens,
  t.output.outputtokencount                   AS output_tokens,
  t.input.cachereadinputtokencount            AS cache_read_tokens,
  t.input.cachewriteinputtokencount           AS cache_write_tokens,
  t.tollgate.costnanousd                      AS cost_nano_usd,
  t.tollgate.status                           AS status
FROM tollgate_invocations t
UNION ALL
SELECT
  'bedrock'                                   AS source,
  from_iso8601_timestamp(b.ts)                AS at,
  b.requestid                                 AS request_id,
  b.operation                                 AS operation,
  b.requestmetadata['tollgate-tenant']        AS tenant,
  b.requestmetadata['tollgate-user']          AS user_id,
  b.requestmetadata['tollgate-use-case']      AS use_case,
  b.requestmetadata['tollgate-decision']      AS decision,
  coalesce(b.requestmetadata['tollgate-original-model'], b.modelid) AS requested_model_id,
  b.modelid                                   AS model_id,
  b.input.inputtokencount                     AS input_tokens,
  b.output.outputtokencount                   AS output_tokens,
  b.input.cachereadinputtokencount            AS cache_read_tokens,
  b.input.cachewriteinputtokencount           AS cache_write_tokens,
  CAST(NULL AS bigint)                        AS cost_nano_usd,
  CAST(NULL AS int)                           AS status
FROM bedrock_invocations b
LEFT JOIN tollgate_invocations t ON t.requestid = b.requestid
WHERE t.requestid IS NULL;

-- Examples.
--
-- Spend per tenant and day, to the nano-dollar:
--   SELECT tenant, date(at) AS day, sum(cost_nano_usd) AS nano_usd,
--          sum(cost_nano_usd) / 1e9 AS usd
--   FROM invocations WHERE source = 'tollgate'
--   GROUP BY 1, 2 ORDER BY 1, 2;
--
-- Decision mix per tenant:
--   SELECT tenant, decision, count(*) FROM invocations
--   WHERE source = 'tollgate' GROUP BY 1, 2;
--
-- Calls that reached Bedrock without going through tollgate:
--   SELECT date(at), model_id, count(*) FROM invocations
--   WHERE source = 'bedrock' GROUP BY 1, 2;
