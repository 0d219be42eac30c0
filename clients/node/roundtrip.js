#!/usr/bin/env node
// A producer and a dialer in another language, through nothing but Kafka and the JSON contracts:
// publish the README's prospect event, wait for its call task as a dialer would (a consumer
// group on the three tier topics), then publish the call's outcome for that task.
//
//   node roundtrip.js [BOOTSTRAP] [--timeout SECONDS]
//
// Configuration uses the product's own variables (CALLSCORE_BOOTSTRAP_SERVERS,
// CALLSCORE_TOPIC_PROSPECTS, CALLSCORE_TOPIC_TASKS_PREFIX, CALLSCORE_TOPIC_OUTCOMES,
// CALLSCORE_SESSION_TIMEOUT_SECONDS, CALLSCORE_HEARTBEAT_INTERVAL_SECONDS); the defaults below
// are the product's defaults. Exit 0 once the outcome is acknowledged, 1 on any error or timeout.

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { Kafka, logLevel, Partitioners } from "kafkajs";

const EXAMPLES = new URL("../../examples/", import.meta.url);
const TIERS = ["high", "medium", "low"];

function usage(message) {
  console.error(`roundtrip: ${message}`);
  console.error("usage: node roundtrip.js [BOOTSTRAP] [--timeout SECONDS]");
  process.exit(2);
}

function parseArgs(argv) {
  const env = process.env;
  const options = {
    bootstrap: env.CALLSCORE_BOOTSTRAP_SERVERS || "localhost:9092",
    timeoutSeconds: 60,
  };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--timeout") {
      options.timeoutSeconds = Number(argv[(i += 1)]);
      if (!(options.timeoutSeconds > 0)) usage("--timeout needs a positive number of seconds");
    } else if (argv[i] === "-h" || argv[i] === "--help") {
      usage("see the comment at the top of this file for the variables it reads");
    } else if (argv[i].startsWith("-")) {
      usage(`unknown option ${argv[i]}`);
    } else {
      options.bootstrap = argv[i];
    }
  }
  const seconds = (name, fallback) => Number(env[name] || fallback);
  options.sessionTimeoutMs = seconds("CALLSCORE_SESSION_TIMEOUT_SECONDS", 30) * 1000;
  options.heartbeatIntervalMs = seconds("CALLSCORE_HEARTBEAT_INTERVAL_SECONDS", 3) * 1000;
  options.topics = {
    prospects: env.CALLSCORE_TOPIC_PROSPECTS || "prospects",
    tasks: TIERS.map((tier) => `${env.CALLSCORE_TOPIC_TASKS_PREFIX || "call-tasks"}.${tier}`),
    outcomes: env.CALLSCORE_TOPIC_OUTCOMES || "call-outcomes",
  };
  return options;
}

function example(name) {
  return JSON.parse(readFileSync(new URL(name, EXAMPLES), "utf8"));
}

function withTimeout(promise, seconds, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${seconds} s`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const kafka = new Kafka({
    clientId: "callscore-node-roundtrip",
    brokers: options.bootstrap.split(","),
    // Failures reach the user as rejected calls (below); the log would add noise such as the
    // local broker answering LeaveGroup at disconnect with "not aware of this member".
    logLevel: logLevel.NOTHING,
    retry: { retries: 3 },
  });

  // The README's event; only the event_id gets a fresh suffix, so every run is a new event.
  const event = example("prospect-event.json");
  event.event_id = `${event.event_id}-${randomUUID().slice(0, 8)}`;

  // A dialer: one consumer group over the three tier topics, from the beginning.
  const consumer = kafka.consumer({
    groupId: `node-dialer-${randomUUID().slice(0, 8)}`,
    sessionTimeout: options.sessionTimeoutMs,
    heartbeatInterval: options.heartbeatIntervalMs,
    allowAutoTopicCreation: false,
  });
  const producer = kafka.producer({
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  let step = `connect to Kafka at ${options.bootstrap}`;
  try {
    await producer.connect();
    await consumer.connect();
    step = `subscribe to ${options.topics.tasks.join(", ")} (do they exist? \`callscore topics\`)`;
    await consumer.subscribe({ topics: options.topics.tasks, fromBeginning: true });
    const task = new Promise((resolve, reject) => {
      consumer
        .run({
          eachMessage: async ({ topic, message }) => {
            const value = JSON.parse(message.value.toString("utf8"));
            if (value.event_id === event.event_id) resolve({ topic, task: value });
          },
        })
        .catch(reject);
    });

    step = `produce to ${options.topics.prospects}`;
    await producer.send({
      topic: options.topics.prospects,
      acks: -1,
      messages: [{ key: event.prospect_id, value: JSON.stringify(event) }],
    });
    console.log(
      `produced prospect event ${event.event_id} to ${options.topics.prospects} ` +
        `(key ${event.prospect_id})`,
    );

    step = "wait for the call task (is a scorer running with a published model?)";
    const found = await withTimeout(task, options.timeoutSeconds, `call task for ${event.event_id}`);
    console.log(`call task from ${found.topic}: ${JSON.stringify(found.task)}`);

    // The dialer called: the README's outcome, for this task.
    const outcome = { ...example("call-outcome.json"), task_id: found.task.task_id };
    step = `produce to ${options.topics.outcomes}`;
    await producer.send({
      topic: options.topics.outcomes,
      acks: -1,
      messages: [{ key: outcome.prospect_id, value: JSON.stringify(outcome) }],
    });
    console.log(`published call outcome to ${options.topics.outcomes}: ${JSON.stringify(outcome)}`);
  } catch (error) {
    throw new Error(`${step}: ${error.message}`);
  } finally {
    await consumer.disconnect().catch(() => {});
    await producer.disconnect().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`roundtrip: error: ${error.message}`);
    process.exit(1);
  },
);
