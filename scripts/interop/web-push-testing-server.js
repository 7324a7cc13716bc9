#!/usr/bin/env node
// Starts the npm `web-push-testing` push-service emulator bound to
// 127.0.0.1 only (its own CLI listens on every interface) and prints
// `PORT <n>` once it listens. Used by tests/tests/end_to_end/interop.rs.
//
// usage: node web-push-testing-server.js [PORT]   (default 0: a free port)
// NODE_PATH or a node_modules next to the working directory must hold
// web-push-testing (scripts/setup.sh installs it into .tools/node).
'use strict';

const path = require('path');

function load(name) {
	const roots = [
		process.env.INTEROP_NODE_MODULES,
		path.join(__dirname, '..', '..', '.tools', 'node', 'node_modules'),
	].filter(Boolean);
	for (const root of roots) {
		try {
			return require(path.join(root, name));
		} catch (err) {
			if (err.code !== 'MODULE_NOT_FOUND') {
				throw err;
			}
		}
	}

	return require(name);
}

const WebPushTestingServer = load('web-push-testing/src/server.js');
const {PushApiModel} = load('web-push-testing/src/PushApiModel.js');

const wanted = Number.parseInt(process.argv[2] || '0', 10);
const model = new PushApiModel();
// The constructor only records the port and builds the express app; the
// routes are added by setRequestHandlers and startServer is not used
// (it would listen on every interface).
const server = new WebPushTestingServer(model, wanted);
server.setRequestHandlers();
const listener = server._app.listen(wanted, '127.0.0.1', () => {
	const {port} = listener.address();
	// Endpoints handed out by /subscribe point at this listener (the
	// package's default is http://localhost:<port>/notify/).
	model.notifyUrl = 'http://127.0.0.1:' + port + '/notify/';
	server._port = port;
	process.stdout.write('PORT ' + port + '\n');
});
listener.on('error', err => {
	console.error(err);
	process.exit(1);
});

// Exit when the parent closes our stdin (the test process died) or on a
// signal.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
for (const sig of ['SIGTERM', 'SIGINT']) {
	process.on(sig, () => process.exit(0));
}
