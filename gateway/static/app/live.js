// The live balance: `subscription { myBalance }` over graphql-transport-ws on /graphql, the
// token in connection_init (a browser cannot set headers on a websocket). Reconnects with a
// fresh token when the server closes the socket (the token expired, or the network dropped).

import { accessToken } from "./auth.js";

const QUERY = "subscription { myBalance(everySeconds: 2) { available pending onHold total } }";

/** Call `onBalance(balance)` on every change and `onState("live"|"offline")`; returns stop(). */
export function watchBalance(onBalance, onState) {
  let socket = null;
  let stopped = false;
  let retry = 1000;
  let timer = null;

  async function connect() {
    const token = await accessToken();
    if (stopped || !token) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/graphql`, "graphql-transport-ws");
    socket.addEventListener("open", () => {
      socket.send(
        JSON.stringify({ type: "connection_init", payload: { Authorization: `Bearer ${token}` } }),
      );
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "connection_ack") {
        retry = 1000;
        onState("live");
        socket.send(JSON.stringify({ id: "balance", type: "subscribe", payload: { query: QUERY } }));
      } else if (message.type === "next" && message.payload?.data?.myBalance) {
        onBalance(message.payload.data.myBalance);
      } else if (message.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
      }
    });
    socket.addEventListener("close", () => {
      socket = null;
      if (stopped) return;
      onState("offline");
      timer = setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30_000);
    });
  }

  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (socket) socket.close(1000, "leaving");
  };
}
