// An app child for test/listeners.test.ts: serves HTTP (body = its pid) on the listener
// it inherited at fd 3. `node serve.mjs [baton|systemd]`; stdin "exit" closes the server
// (stop accepting, finish in-flight requests) and exits.
import { writeSync } from 'node:fs';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { adoptSystemdListeners, inheritedListeners } from '../../dist/src/os/listeners.js';

const say = (obj) => writeSync(1, JSON.stringify({ pid: process.pid, ...obj }) + '\n');
let fd;
if (process.argv[2] === 'systemd') {
  // systemd sets LISTEN_PID to the pid it execs; a Node parent cannot, so set it here.
  process.env.LISTEN_PID = String(process.pid);
  const held = adoptSystemdListeners();
  say({ event: 'adopted', listeners: held?.map((l) => ({ name: l.name, address: l.address, fd: l.fd, kind: l.spec.kind })) });
  fd = held[0].fd;
} else {
  const inherited = inheritedListeners();
  say({ event: 'inherited', listeners: [...inherited].map(([name, v]) => ({ name, ...v })) });
  fd = [...inherited.values()][0].fd;
}
const server = http.createServer((req, res) => res.end(String(process.pid)));
server.listen({ fd }, () => say({ event: 'listening' }));
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'exit') server.close(() => process.exit(0));
});
