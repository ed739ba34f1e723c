// Lets Node.js run the SDK natively (`cargo xtask test`): the WIT import
// `sonde:collector/host@0.2.0`, which componentize-js provides inside a
// component, resolves to `host.mjs` here.
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
