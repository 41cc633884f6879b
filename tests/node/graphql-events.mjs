// Run one GraphQL operation over graphql-transport-ws with the `graphql-ws` client (on the
// `ws` package) and print, one JSON line each, every result ({"next": ...}) and then how
// it ended ({"complete": true}, {"error": ...} or {"closed": code}).
//
//   node graphql-events.mjs URL QUERY [VARIABLES_JSON] [CONNECTION_PARAMS_JSON]
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, query, variables = "{}", params = "{}"] = process.argv.slice(2);
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: JSON.parse(params),
  retryAttempts: 0,
  on: { closed: (event) => print({ closed: event.code }) },
});

client.subscribe(
  { query, variables: JSON.parse(variables) },
  {
    next: (result) => print({ next: result }),
    error: (error) => {
      print({ error: Array.isArray(error) ? error : { code: error.code, message: String(error.message ?? error) } });
      client.dispose();
    },
    complete: () => {
      print({ complete: true });
      client.dispose();
    },
  },
);
