// Subscribe to a running gateway with a real third-party client and print every result as one JSON line.
//
//   node subscribe.mjs <graphql-ws|subscriptions-transport-ws|graphql-sse> <ws://host:port/graphql> <query> [until]
//
// The token comes from SUBSCRIBE_AUTHORIZATION ("Bearer ..."), sent in connection_init's payload (the
// websocket clients) or as the Authorization header (graphql-sse, distinct-connections mode, over http://).
// `until`: stop (exit 0) after the result whose instanceStatusChanges.to equals it. Errors exit 1.
import { createClient } from "graphql-ws";
import { createClient as createSseClient } from "graphql-sse";
import transportWs from "subscriptions-transport-ws";
import WebSocket from "ws";

const [protocol, url, query, until] = process.argv.slice(2);
const connectionParams = { authorization: process.env.SUBSCRIBE_AUTHORIZATION };

function print(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

function finished(result) {
  return until && result?.data?.instanceStatusChanges?.to === until;
}

function fail(error) {
  const message = error instanceof Error ? error.message : JSON.stringify(error);
  print({ failed: message });
  process.exit(1);
}

async function withGraphqlWs() {
  // Node 20's WebSocket global is still experimental: the `ws` package is the implementation.
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    connectionParams,
    retryAttempts: 0,
    on: { connected: () => print({ connected: "graphql-transport-ws" }) },
  });
  try {
    for await (const result of client.iterate({ query })) {
      print({ result });
      if (finished(result)) break;
    }
  } finally {
    await client.dispose();
  }
}

function withSubscriptionsTransportWs() {
  const { SubscriptionClient } = transportWs;
  return new Promise((resolve, reject) => {
    const client = new SubscriptionClient(url, { connectionParams, reconnect: false }, WebSocket);
    client.onConnected(() => print({ connected: "graphql-ws" }));
    client.onError(reject);
    const subscription = client.request({ query }).subscribe({
      next(result) {
        print({ result });
        if (finished(result)) {
          subscription.unsubscribe();
          client.close();
          resolve();
        }
      },
      error: reject,
      complete: resolve,
    });
  });
}

async function withGraphqlSse() {
  const client = createSseClient({
    url: url.replace(/^ws/, "http"),
    headers: { Authorization: process.env.SUBSCRIBE_AUTHORIZATION },
    retryAttempts: 0,
  });
  print({ connected: "graphql-sse" }); // distinct connections: the stream opens with the subscription
  try {
    for await (const result of client.iterate({ query })) {
      print({ result });
      if (finished(result)) break;
    }
  } finally {
    client.dispose();
  }
}

if (protocol === "graphql-ws") {
  await withGraphqlWs().catch(fail);
} else if (protocol === "graphql-sse") {
  await withGraphqlSse().catch(fail);
} else if (protocol === "subscriptions-transport-ws") {
  await withSubscriptionsTransportWs().catch(fail);
} else {
  fail(`unknown client ${protocol}`);
}
process.exit(0);
