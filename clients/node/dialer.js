#!/usr/bin/env node
// A reference dialer, as a third party writes one: claim calls from `callscore api`, "call" them
// (simulated), report each call's outcome on Kafka with its disposition. The same behaviour,
// options, output and draws as clients/python/dialer.py.
//
//   node dialer.js [--agent NAME] [--batch N] [--calls N] [--seconds S] ...   (npm run dialer --)
//
// Loop: `POST /queue/claim {"agent", "n", "tier"}` (bearer token CALLSCORE_API_TOKEN if set; a 503
// is retried after its Retry-After), then for every claimed task, best first: a simulated call
// whose disposition is drawn by the --dispositions shares (--answer-rate sets the share of
// `reached`), a reached prospect subscribing with probability = the task's score, a callback asked
// for --callback-hours later; the CallOutcome goes to the outcomes topic keyed by prospect_id, and
// the call counts only once the broker has acknowledged it (acks: all). It stops after --calls
// calls, after --seconds seconds, or when --idle-exit claims in a row came back empty. One line
// per call, then one JSON line: calls per disposition, claims, refused, ...
//
// The draws are a function of the seed and the call's number only (the first 48 bits of
// sha256("<seed>:<call>:<what>") over 2**48), so the same seed and shares give the same
// dispositions here and in the Python client.
//
// Configuration: the product's variables and defaults (CALLSCORE_BOOTSTRAP_SERVERS,
// CALLSCORE_TOPIC_OUTCOMES, CALLSCORE_API_PORT for the default --api http://localhost:PORT,
// CALLSCORE_API_TOKEN, CALLSCORE_SECURITY_PROTOCOL, CALLSCORE_SASL_MECHANISM,
// CALLSCORE_SASL_USERNAME, CALLSCORE_SASL_PASSWORD, CALLSCORE_SSL_CA_FILE). Node >= 18 (global
// fetch, util.parseArgs) and kafkajs. Exit 0 when it stopped as asked, 1 on an error (one line on
// stderr: the API unreachable or refusing the token, the broker unreachable, an outcome not
// acknowledged), 2 on a usage error, 130 on Ctrl-C.

import { createHash, randomBytes } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Kafka, logLevel, Partitioners } from "kafkajs";

// The CallOutcome contract's dispositions (schemas/json/call_outcome.schema.json), in its order.
export const DISPOSITIONS = [
  "reached",
  "no_answer",
  "busy",
  "voicemail",
  "callback",
  "wrong_number",
  "do_not_call",
];
const DEFAULT_SHARES =
  "reached=35,no_answer=30,busy=10,voicemail=12,callback=5,wrong_number=5,do_not_call=3";
const TIERS = ["high", "medium", "low"];
const CLAIM_MAX = 100; // the API's most tasks per claim (schemas/api.py)
const DURATION_MIN = 30; // a reached call's simulated length, seconds
const DURATION_MAX = 600;
const NOTES = "simulated call (clients/node/dialer.js)";

class DialerError extends Error {}

class UsageError extends Error {}

// --- the simulated calls: pure functions, the same as in clients/python/dialer.py ---------------
export function uniform(seed, call, what) {
  const digest = createHash("sha256").update(`${seed}:${call}:${what}`).digest();
  return digest.readUIntBE(0, 6) / 2 ** 48;
}

export function parseShares(spec) {
  const weights = Object.fromEntries(DISPOSITIONS.map((d) => [d, 0]));
  for (const raw of spec.split(",")) {
    const part = raw.trim();
    const at = part.indexOf("=");
    const name = at < 0 ? part : part.slice(0, at);
    if (at < 0 || !DISPOSITIONS.includes(name)) {
      throw new UsageError(
        `'${part}': expected DISPOSITION=WEIGHT, one of ${DISPOSITIONS.join(", ")}`,
      );
    }
    const text = part.slice(at + 1).trim();
    const weight = Number(text);
    if (text === "" || Number.isNaN(weight)) {
      throw new UsageError(`'${part}': the weight is not a number`);
    }
    if (!Number.isFinite(weight) || weight < 0) {
      throw new UsageError(`'${part}': a weight is a finite number >= 0`);
    }
    weights[name] = weight;
  }
  let total = 0;
  for (const d of DISPOSITIONS) total += weights[d];
  if (!(total > 0)) throw new UsageError("at least one weight must be > 0");
  return Object.fromEntries(DISPOSITIONS.map((d) => [d, weights[d] / total]));
}

export function withAnswerRate(shares, rate) {
  if (!(rate >= 0 && rate <= 1)) throw new UsageError("--answer-rate is a share between 0 and 1");
  let others = 0;
  for (const d of DISPOSITIONS) if (d !== "reached") others += shares[d];
  if (others <= 0 && rate < 1) {
    throw new UsageError("--answer-rate below 1 needs a share > 0 for another disposition");
  }
  return Object.fromEntries(
    DISPOSITIONS.map((d) => [
      d,
      d === "reached" ? rate : others > 0 ? (shares[d] * (1 - rate)) / others : 0,
    ]),
  );
}

export function pick(shares, u) {
  let cumulative = 0;
  for (const d of DISPOSITIONS) {
    cumulative += shares[d];
    if (u < cumulative && shares[d] > 0) return d;
  }
  return DISPOSITIONS.filter((d) => shares[d] > 0).at(-1); // u within rounding of 1
}

function iso(moment) {
  return moment.toISOString().replace("Z", "+00:00");
}

export function outcomeFor(task, call, seed, shares, calledAt, callbackHours) {
  const disposition = pick(shares, uniform(seed, call, "disposition"));
  const outcome = {
    task_id: task.task_id,
    event_id: task.event_id,
    prospect_id: task.prospect_id,
    called_at: iso(calledAt),
    disposition,
  };
  if (disposition === "reached") {
    outcome.subscribed = uniform(seed, call, "subscribed") < Number(task.score);
    const span = DURATION_MAX - DURATION_MIN + 1;
    outcome.duration_seconds = DURATION_MIN + Math.floor(uniform(seed, call, "duration") * span);
  } else if (disposition === "callback") {
    outcome.callback_at = iso(new Date(calledAt.getTime() + callbackHours * 3_600_000));
  }
  outcome.notes = NOTES;
  return outcome;
}

function callLine(call, task, outcome) {
  const parts = [
    `call ${call}`,
    `task=${task.task_id}`,
    `prospect=${task.prospect_id}`,
    `tier=${task.priority ?? "None"}`,
    `score=${Number(task.score).toFixed(4)}`,
    `attempt=${task.attempt ?? "None"}`,
    `disposition=${outcome.disposition}`,
  ];
  if ("subscribed" in outcome) {
    parts.push(`subscribed=${outcome.subscribed}`, `duration_seconds=${outcome.duration_seconds}`);
  }
  if ("callback_at" in outcome) parts.push(`callback_at=${outcome.callback_at}`);
  return parts.join(" ");
}

// --- the API -------------------------------------------------------------------------------------
export function retryAfterSeconds(header, fallback = 1) {
  if (!header) return fallback;
  const seconds = Number(header);
  if (header.trim() !== "" && Number.isFinite(seconds)) return Math.max(0, seconds);
  const when = Date.parse(header);
  return Number.isNaN(when) ? fallback : Math.max(0, (when - Date.now()) / 1000);
}

function errorText(text) {
  try {
    const error = JSON.parse(text).error;
    if (error !== undefined) return String(error);
  } catch {
    // not JSON: the text itself
  }
  return text.trim().slice(0, 200) || "(no body)";
}

class Api {
  constructor(url, token, timeoutSeconds, maxRetries) {
    this.url = url.replace(/\/+$/, "");
    this.token = token;
    this.timeoutSeconds = timeoutSeconds;
    this.maxRetries = maxRetries;
    this.retries = 0; // 503s retried, in all
  }

  // POST /queue/claim; a 503 is retried after its Retry-After, at most maxRetries times in a row
  // (and not past the deadline).
  async claim(agent, n, tier, deadline) {
    const body = { agent, n };
    if (tier) body.tier = tier;
    for (let inARow = 1; ; inARow += 1) {
      const { status, retryAfter, text } = await this.post("/queue/claim", body);
      if (status === 200) return JSON.parse(text);
      if (status === 401) {
        const hint = this.token ? "wrong" : "missing; set CALLSCORE_API_TOKEN";
        throw new DialerError(
          `the API at ${this.url} refused the bearer token (401): the token is ${hint}`,
        );
      }
      if (status !== 503) {
        throw new DialerError(
          `POST ${this.url}/queue/claim answered ${status}: ${errorText(text)}`,
        );
      }
      const wait = retryAfterSeconds(retryAfter);
      const late = deadline !== null && performance.now() + wait * 1000 > deadline;
      if (inARow > this.maxRetries || late) {
        throw new DialerError(
          `POST ${this.url}/queue/claim still answers 503 after ${inARow} tries: ` +
            errorText(text),
        );
      }
      this.retries += 1;
      await sleep(wait * 1000);
    }
  }

  async post(path, body) {
    const headers = { "Content-Type": "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let answer;
    try {
      answer = await fetch(this.url + path, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutSeconds * 1000),
      });
      return {
        status: answer.status,
        retryAfter: answer.headers.get("Retry-After"),
        text: await answer.text(),
      };
    } catch (error) {
      if (error.name === "TimeoutError") {
        throw new DialerError(
          `the API at ${this.url} did not answer within ${this.timeoutSeconds} s`,
        );
      }
      const cause = error.cause ? error.cause.message || error.cause.code : error.message;
      throw new DialerError(`the API at ${this.url} is unreachable: ${cause}`);
    }
  }
}

// --- Kafka ---------------------------------------------------------------------------------------
// kafkajs's newest error log line ("Connection error: connect ECONNREFUSED ..."), kept to name
// the cause of a timeout; nothing of its log is printed: failures reach the user as one line.
let lastKafkaError = null;

function keepLastError() {
  return ({ log }) => {
    lastKafkaError = log.message;
  };
}

function kafkaConfig(env, bootstrap, connectTimeoutSeconds) {
  const protocol = (env.CALLSCORE_SECURITY_PROTOCOL || "PLAINTEXT").toUpperCase();
  const config = {
    clientId: "callscore-reference-dialer",
    brokers: bootstrap.split(",").map((b) => b.trim()),
    logLevel: logLevel.ERROR,
    logCreator: keepLastError,
    connectionTimeout: connectTimeoutSeconds * 1000,
    retry: { retries: 3 },
  };
  if (protocol === "SSL" || protocol === "SASL_SSL") {
    const ca = env.CALLSCORE_SSL_CA_FILE;
    config.ssl = ca ? { ca: [readFileSync(ca)] } : true;
  }
  if (env.CALLSCORE_SASL_MECHANISM) {
    config.sasl = {
      mechanism: env.CALLSCORE_SASL_MECHANISM.toLowerCase(), // plain, scram-sha-256, scram-sha-512
      username: env.CALLSCORE_SASL_USERNAME || "",
      password: env.CALLSCORE_SASL_PASSWORD || "",
    };
  }
  return config;
}

function withTimeout(promise, seconds, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

class Outcomes {
  constructor(kafka, topic, bootstrap, ackTimeoutSeconds) {
    this.kafka = kafka;
    this.topic = topic;
    this.bootstrap = bootstrap;
    this.ackTimeoutSeconds = ackTimeoutSeconds;
    this.producer = kafka.producer({
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
  }

  // The broker answers and the outcomes topic exists; before any claim is made.
  async check(timeoutSeconds) {
    const admin = this.kafka.admin();
    const unreachable = `no answer within ${timeoutSeconds} s`;
    try {
      await withTimeout(admin.connect(), timeoutSeconds, unreachable).catch((error) => {
        throw lastKafkaError ? new Error(`${error.message} (${lastKafkaError})`) : error;
      });
    } catch (error) {
      await admin.disconnect().catch(() => {});
      throw new DialerError(`the broker at ${this.bootstrap} is unreachable: ${error.message}`);
    }
    try {
      await withTimeout(
        admin.fetchTopicMetadata({ topics: [this.topic] }),
        timeoutSeconds,
        unreachable,
      );
    } catch (error) {
      throw new DialerError(
        `the outcomes topic '${this.topic}' is not on the broker at ${this.bootstrap} ` +
          `(${error.message}; does it exist? \`callscore topics\`)`,
      );
    } finally {
      await admin.disconnect().catch(() => {});
    }
    try {
      await withTimeout(this.producer.connect(), timeoutSeconds, unreachable);
    } catch (error) {
      throw new DialerError(`the broker at ${this.bootstrap} is unreachable: ${error.message}`);
    }
  }

  async publish(outcome) {
    try {
      await withTimeout(
        this.producer.send({
          topic: this.topic,
          acks: -1,
          timeout: this.ackTimeoutSeconds * 1000,
          messages: [{ key: String(outcome.prospect_id), value: JSON.stringify(outcome) }],
        }),
        this.ackTimeoutSeconds + 5,
        `no acknowledgement within ${this.ackTimeoutSeconds} s`,
      );
    } catch (error) {
      throw new DialerError(
        `the outcome of task ${outcome.task_id} was not acknowledged by the broker at ` +
          `${this.bootstrap}: ${error.message}`,
      );
    }
  }

  async close() {
    await this.producer.disconnect().catch(() => {});
  }
}

// --- the loop ------------------------------------------------------------------------------------
const OPTIONS = {
  api: { type: "string" },
  bootstrap: { type: "string" },
  topic: { type: "string" },
  agent: { type: "string", default: "reference-dialer" },
  tier: { type: "string" },
  batch: { type: "string", default: "5" },
  calls: { type: "string" },
  seconds: { type: "string" },
  "idle-exit": { type: "string", default: "3" },
  "idle-wait": { type: "string", default: "2" },
  seed: { type: "string" },
  dispositions: { type: "string", default: DEFAULT_SHARES },
  "answer-rate": { type: "string" },
  "callback-hours": { type: "string", default: "1" },
  "call-seconds": { type: "string", default: "0" },
  "http-timeout": { type: "string", default: "30" },
  "max-retries": { type: "string", default: "10" },
  "connect-timeout": { type: "string", default: "10" },
  "ack-timeout": { type: "string", default: "30" },
  help: { type: "boolean", short: "h" },
};

function number(values, name, { integer = false, min = 0, positive = false } = {}) {
  const text = values[name];
  if (text === undefined) return null;
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < min || (positive && value <= 0)) {
    throw new UsageError(`--${name} ${text}: must be a number ${positive ? ">" : ">="} ${min}`);
  }
  if (integer && !Number.isInteger(value)) throw new UsageError(`--${name} ${text}: an integer`);
  return value;
}

function parseOptions(argv, env) {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: OPTIONS, strict: true }));
  } catch (error) {
    throw new UsageError(error.message);
  }
  if (values.help) {
    console.log(
      "usage: node dialer.js [--api URL] [--bootstrap SERVERS] [--topic TOPIC] [--agent NAME]\n" +
        "  [--tier high|medium|low] [--batch N] [--calls N] [--seconds S] [--idle-exit N]\n" +
        "  [--idle-wait S] [--seed N] [--dispositions D=W,...] [--answer-rate R]\n" +
        "  [--callback-hours H] [--call-seconds S] [--http-timeout S] [--max-retries N]\n" +
        "  [--connect-timeout S] [--ack-timeout S]\n" +
        "(the comment at the top of dialer.js says what each does; the defaults are the Python " +
        "client's)",
    );
    process.exit(0);
  }
  if (values.tier !== undefined && !TIERS.includes(values.tier)) {
    throw new UsageError(`--tier ${values.tier}: one of ${TIERS.join(", ")}`);
  }
  const options = {
    api: values.api || `http://localhost:${env.CALLSCORE_API_PORT || "6068"}`,
    bootstrap: values.bootstrap || env.CALLSCORE_BOOTSTRAP_SERVERS || "localhost:9092",
    topic: values.topic || env.CALLSCORE_TOPIC_OUTCOMES || "call-outcomes",
    agent: values.agent,
    tier: values.tier ?? null,
    batch: number(values, "batch", { integer: true, min: 1 }),
    calls: number(values, "calls", { integer: true, min: 1 }),
    seconds: number(values, "seconds"),
    idleExit: number(values, "idle-exit", { integer: true }),
    idleWait: number(values, "idle-wait"),
    callbackHours: number(values, "callback-hours"),
    callSeconds: number(values, "call-seconds"),
    httpTimeout: number(values, "http-timeout", { positive: true }),
    maxRetries: number(values, "max-retries", { integer: true }),
    connectTimeout: number(values, "connect-timeout", { positive: true }),
    ackTimeout: number(values, "ack-timeout", { positive: true }),
  };
  if (options.batch > CLAIM_MAX) throw new UsageError(`--batch is at most ${CLAIM_MAX}`);
  try {
    options.shares = parseShares(values.dispositions);
    const rate = number(values, "answer-rate", { min: -Infinity });
    if (rate !== null) options.shares = withAnswerRate(options.shares, rate);
  } catch (error) {
    throw new UsageError(`--dispositions/--answer-rate: ${error.message}`);
  }
  // The seed is the hash's input as its decimal text, like Python's int: kept exact (BigInt).
  if (values.seed !== undefined && !/^[+-]?\d+$/.test(values.seed.trim())) {
    throw new UsageError(`--seed ${values.seed}: an integer`);
  }
  options.seed =
    values.seed !== undefined ? BigInt(values.seed.trim()) : randomBytes(4).readUInt32BE(0);
  return options;
}

async function run(options, env) {
  const kafka = new Kafka(kafkaConfig(env, options.bootstrap, options.connectTimeout));
  const outcomes = new Outcomes(kafka, options.topic, options.bootstrap, options.ackTimeout);
  try {
    await outcomes.check(options.connectTimeout);
  } catch (error) {
    await outcomes.close();
    throw error;
  }
  const api = new Api(
    options.api,
    env.CALLSCORE_API_TOKEN || null,
    options.httpTimeout,
    options.maxRetries,
  );
  const started = performance.now();
  const deadline = options.seconds === null ? null : started + options.seconds * 1000;
  const summary = {
    agent: options.agent,
    seed: Number.isSafeInteger(Number(options.seed)) ? Number(options.seed) : String(options.seed),
    calls: 0,
    dispositions: Object.fromEntries(DISPOSITIONS.map((d) => [d, 0])),
    subscribed: 0,
    claims: 0,
    claimed: 0,
    refused: 0,
    undecided: 0,
    empty_claims: 0,
    retried_503: 0,
    uncalled: 0,
    stopped: null,
  };
  const outOfTime = () => deadline !== null && performance.now() >= deadline;
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
  };
  process.on("SIGINT", onSigint);

  let idle = 0;
  try {
    while (summary.stopped === null) {
      if (interrupted) {
        summary.stopped = "interrupted";
        break;
      }
      let wanted = options.batch;
      if (options.calls !== null) {
        wanted = Math.min(wanted, options.calls - summary.calls);
        if (wanted <= 0) {
          summary.stopped = "calls";
          break;
        }
      }
      if (outOfTime()) {
        summary.stopped = "seconds";
        break;
      }
      const answer = await api.claim(options.agent, wanted, options.tier, deadline);
      summary.claims += 1;
      summary.refused += answer.refused ?? 0;
      summary.undecided += answer.undecided ?? 0;
      const tasks = answer.tasks ?? [];
      summary.claimed += tasks.length;
      if (tasks.length === 0) {
        summary.empty_claims += 1;
        idle += 1;
        if (options.idleExit && idle >= options.idleExit) {
          summary.stopped = "idle";
          break;
        }
        let wait = options.idleWait * 1000;
        if (deadline !== null) wait = Math.max(0, Math.min(wait, deadline - performance.now()));
        await sleep(wait);
        continue;
      }
      idle = 0;
      for (const [index, task] of tasks.entries()) {
        if (outOfTime() || interrupted) {
          summary.uncalled += tasks.length - index; // their leases run out
          break;
        }
        const call = summary.calls + 1;
        const calledAt = new Date();
        if (options.callSeconds > 0) await sleep(options.callSeconds * 1000);
        const outcome = outcomeFor(
          task,
          call,
          options.seed,
          options.shares,
          calledAt,
          options.callbackHours,
        );
        await outcomes.publish(outcome);
        summary.calls = call;
        summary.dispositions[outcome.disposition] += 1;
        if (outcome.subscribed) summary.subscribed += 1;
        console.log(callLine(call, task, outcome));
      }
    }
  } catch (error) {
    summary.stopped = "error";
    throw error;
  } finally {
    process.off("SIGINT", onSigint);
    summary.retried_503 = api.retries;
    summary.elapsed_seconds = Math.round(performance.now() - started) / 1000;
    console.log(JSON.stringify(summary));
    await outcomes.close();
  }
  return summary.stopped === "interrupted" ? 130 : 0;
}

async function main() {
  let options;
  try {
    options = parseOptions(process.argv.slice(2), process.env);
  } catch (error) {
    console.error(`dialer: usage error: ${error.message} (--help)`);
    return 2;
  }
  try {
    return await run(options, process.env);
  } catch (error) {
    if (!(error instanceof DialerError)) throw error;
    console.error(`dialer: error: ${error.message}`);
    return 1;
  }
}

// Run only as a program, not when imported (the pure functions above are exported).
function isMain() {
  try {
    return import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}

if (isMain()) {
  main().then(
    (code) => process.exit(code),
    (error) => {
      console.error(`dialer: error: ${error.stack || error.message}`);
      process.exit(1);
    },
  );
}
