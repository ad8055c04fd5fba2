// Composes the subgraphs given on stdin ([{"name", "url", "sdl"}]) with Apollo's composition
// (what rover and the Apollo Router use); prints {"errors": [...], "supergraph": "..."}.
import { readFileSync } from "node:fs";
import { composeServices } from "@apollo/composition";
import { parse } from "graphql";

const subgraphs = JSON.parse(readFileSync(0, "utf8")).map((s) => ({
  name: s.name,
  url: s.url,
  typeDefs: parse(s.sdl),
}));
const result = composeServices(subgraphs);
process.stdout.write(
  JSON.stringify({
    errors: (result.errors ?? []).map((e) => e.message),
    hints: (result.hints ?? []).map((h) => h.message),
    supergraph: result.supergraphSdl ?? null,
  }),
);
