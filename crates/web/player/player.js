// The watch page's player, bundled into the binary by build.rs (esbuild) and loaded by app.js
// only on the watch page.
//
// hls.js plays the stream through Media Source Extensions wherever the browser has them
// (Chromium, Firefox, Safari on macOS): Chromium's own HLS gave up now and then on a live master
// playlist (DEMUXER_ERROR_COULD_NOT_PARSE), and hls.js retries what a live edge makes flaky (a
// playlist a segment behind, a request that races the packager). Where MSE is missing (Safari on
// iPhone), the browser's own HLS is the player.
import Hls from "hls.js";

// Starts playing `url` in `video`. `report(text)` is told of each problem a viewer should see,
// and of `null` once playback recovers. Returns false when this browser cannot play HLS at all.
export function play(video, url, report) {
  if (Hls.isSupported()) {
    const hls = new Hls({
      // The origin's media playlists are low-latency HLS: the player loads each part (a tenth
      // of a second) as it is written, with blocking playlist reloads, and plays the
      // playlist's PART-HOLD-BACK behind the live edge. Setting liveSyncDuration or
      // liveSyncDurationCount here would override that hold-back with whole segments.
      lowLatencyMode: true,
    });
    let mediaRecoveries = 0;
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
        report(`Reconnecting to the stream (${data.details})…`);
        hls.startLoad();
      } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries < 3) {
        mediaRecoveries += 1;
        report(`Recovering playback (${data.details})…`);
        hls.recoverMediaError();
      } else {
        report(`Playback failed: ${data.details}`);
        hls.destroy();
      }
    });
    hls.on(Hls.Events.FRAG_BUFFERED, () => report(null));
    hls.loadSource(url);
    hls.attachMedia(video);
    video.play().catch(() => {});
    return true;
  }
  if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    video.play().catch(() => {});
    return true;
  }
  return false;
}
