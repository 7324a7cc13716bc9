#!/usr/bin/env node
// Times npm `web-push` for host-harness/cli/benches/crypto.rs: generateRequestDetails
// (aes128gcm encrypt + a new VAPID JWT, as web-push signs one per request)
// and encrypt alone, for a given payload size, single-threaded.
// Prints one JSON line: {"generate_request_details_per_s": ..., "encrypt_per_s": ..., "version": ...}
//
// usage: node bench-web-push.js [PAYLOAD_OCTETS=200] [SECONDS_PER_ROUND=0.6] [ROUNDS=5]
'use strict';

const crypto = require('crypto');
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

const webPush = load('web-push');
const version = load('web-push/package.json').version;

const size = Number.parseInt(process.argv[2] || '200', 10);
const seconds = Number.parseFloat(process.argv[3] || '0.6');
const rounds = Number.parseInt(process.argv[4] || '5', 10);

const ua = crypto.createECDH('prime256v1');
ua.generateKeys();
const subscription = {
	endpoint: 'https://push.example.net/wpush/v2/abcdef',
	keys: {
		p256dh: ua.getPublicKey('base64url'),
		auth: crypto.randomBytes(16).toString('base64url'),
	},
};
const vapid = webPush.generateVAPIDKeys();
const options = {
	vapidDetails: {
		subject: 'mailto:bench@example.com',
		publicKey: vapid.publicKey,
		privateKey: vapid.privateKey,
	},
	TTL: 86400,
	contentEncoding: 'aes128gcm',
};
const payload = Buffer.alloc(size, 'x');

function median(xs) {
	const s = [...xs].sort((a, b) => a - b);
	return s[Math.floor(s.length / 2)];
}

function rate(fn) {
	for (let i = 0; i < 50; i++) {
		fn();
	}

	const results = [];
	for (let r = 0; r < rounds; r++) {
		const start = process.hrtime.bigint();
		let n = 0;
		let elapsed = 0;
		while (elapsed < seconds) {
			for (let i = 0; i < 20; i++) {
				fn();
			}

			n += 20;
			elapsed = Number(process.hrtime.bigint() - start) / 1e9;
		}

		results.push(n / elapsed);
	}

	return median(results);
}

const details = rate(() => webPush.generateRequestDetails(subscription, payload, options));
const encrypt = rate(() => webPush.encrypt(subscription.keys.p256dh, subscription.keys.auth, payload, 'aes128gcm'));
process.stdout.write(JSON.stringify({
	generate_request_details_per_s: details,
	encrypt_per_s: encrypt,
	version,
	node: process.version,
}) + '\n');
