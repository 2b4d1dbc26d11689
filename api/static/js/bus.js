// @ts-check
// Requests that go against the direction of the imports: the API layer cannot call the
// token panel, nor the loaders the renderer, without an import circle. They announce what
// happened here, and main.js wires each to its handler.

/**
 * @typedef {object} Events
 * @property {string} unauthorized the API answered 401; the reason it gave
 * @property {undefined} render the records changed: draw the tables again (batched)
 * @property {undefined} restart the token changed: read everything again and reconnect
 */

const target = new EventTarget();

/**
 * @template {keyof Events} K
 * @param {K} name
 * @param {Events[K]} [detail]
 */
export function emit(name, detail) {
  target.dispatchEvent(new CustomEvent(name, { detail }));
}

/**
 * @template {keyof Events} K
 * @param {K} name
 * @param {(detail: Events[K]) => void} handler
 */
export function on(name, handler) {
  target.addEventListener(name, (e) => handler(/** @type {CustomEvent<Events[K]>} */ (e).detail));
}
