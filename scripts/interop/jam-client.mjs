#!/usr/bin/env node
// Drives the npm JMAP client `jmap-jam` (MIT) against a JMAP server for
// tests/tests/end_to_end/interop/jam_client.rs: one JSON command per stdin
// line, one JSON answer per stdout line. The client's own code builds every
// request (`using`, method calls, result references) and reads every
// response (method errors are thrown by it); this script only relays.
//
// usage: node jam-client.mjs SESSION_URL BEARER_TOKEN
// commands:
//   {"op": "session"}                          -> {"ok": <Session as jam loaded it>}
//   {"op": "call", "method": "PushSubscription/get", "args": {...}}
//                                              -> {"ok": {"data": ..., "sessionState": ...}}
//   {"op": "destroyAll"}   PushSubscription/get then /set destroying
//                          "#destroy": /list/*/id, in one request
//                                              -> {"ok": {"all": ..., "gone": ..., "sessionState": ...}}
// A call the client throws on answers {"error": <what it threw>}.
// The script exits when stdin closes.
import path from 'node:path';
import readline from 'node:readline';
import {fileURLToPath, pathToFileURL} from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = process.env.INTEROP_NODE_MODULES
	|| path.join(here, '..', '..', '.tools', 'node', 'node_modules');
const {default: JamClient} = await import(
	pathToFileURL(path.join(modules, 'jmap-jam', 'dist', 'index.js')).href);

const [sessionUrl, bearerToken] = process.argv.slice(2);
const jam = new JamClient({sessionUrl, bearerToken});
// The client loads the Session at once; a failure there is reported by the
// first command that awaits it, not as an unhandled rejection that ends node.
jam.session.catch(() => {});
// Every request the client sends gives up after 10 s.
const options = () => ({fetchInit: {signal: AbortSignal.timeout(10_000)}});

// What the client threw, as JSON: a method error's arguments, a request
// problem's body, or an Error's message.
function thrown(err) {
	if (err instanceof Error) {
		return {message: err.message};
	}

	return err;
}

async function run(command) {
	switch (command.op) {
		case 'session':
			return jam.session;
		case 'call': {
			const [entity, operation] = command.method.split('/');
			const [data, meta] = await jam.api[entity][operation](command.args, options());
			return {data, sessionState: meta.sessionState};
		}

		case 'destroyAll': {
			const [results, meta] = await jam.requestMany(t => {
				const all = t.PushSubscription.get({ids: null, properties: ['id']});
				const gone = t.PushSubscription.set({destroy: all.$ref('/list/*/id')});
				return {all, gone};
			}, options());
			return {all: results.all, gone: results.gone, sessionState: meta.sessionState};
		}

		default:
			throw new Error('unknown op ' + command.op);
	}
}

const lines = readline.createInterface({input: process.stdin});
for await (const line of lines) {
	let answer;
	try {
		answer = {ok: await run(JSON.parse(line))};
	} catch (error) {
		answer = {error: thrown(error)};
	}

	process.stdout.write(JSON.stringify(answer) + '\n');
}
