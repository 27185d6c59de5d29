//! The contract's "Live streaming" section, plus what organizers and caches need around it:
//! recordings listed and downloaded by the organizer, the media origin (`/live/…`), and the
//! token check a point of presence asks before serving from its cache (`/live/_auth`).

use crate::access::OwnedEvent;
use crate::extract::CurrentUser;
use crate::wire::ErrorBody;
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use marquee_domain::EventId;
use marquee_media::llhls;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamKeyBody {
    /// Goes in the encoder's "stream key" box; shown once, stored only as a hash.
    pub stream_key: String,
    /// The RTMP server URL for the encoder (`rtmp://host:port/live`).
    pub rtmp_url: String,
    /// The SRT URL, key included as the stream id; `null` when SRT ingest is off.
    pub srt_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamBody {
    /// `idle`, `live` or `ended`.
    pub status: String,
    /// HLS master playlist, with a playback token for this viewer in its path.
    pub hls_url: String,
    /// DASH MPD over the same segments.
    pub dash_url: String,
    /// Why the stream is not playing as sent (audio only, an unsupported codec, no
    /// transcoder free), when something is wrong.
    pub problem: Option<String>,
    /// When the playback URLs stop working; fetch this again for new ones.
    pub expires_at: DateTime<Utc>,
    /// Viewers watching through this node in the last 30 s (organizers and admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewers: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingBody {
    pub id: String,
    pub bytes: i64,
    pub duration_ms: i64,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// Download (MP4), for the organizer (bearer token).
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingList {
    pub items: Vec<RecordingBody>,
}

/// Issue (or rotate) the event's stream key.
#[utoipa::path(
    post, path = "/api/v1/events/{id}/stream", tag = "live",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 201, description = "A new key; the previous one no longer publishes", body = StreamKeyBody),
        (status = 403, description = "Not the event's organizer", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
    )
)]
pub async fn issue_stream_key(
    State(state): State<AppState>,
    owned: OwnedEvent,
) -> Result<(StatusCode, Json<StreamKeyBody>), ApiError> {
    let key = marquee_media::new_stream_key();
    state
        .store
        .issue_stream_key(&owned.event.id, &marquee_media::stream_key_hash(&key))
        .await?;
    // A show that ended may start again with the new key; a live one loses the publisher of
    // the old key (a leaked key stops working at once) and waits out the reconnect grace for
    // one with the new key, which continues the show.
    state.live.streams.reset(owned.event.id.as_str());
    state
        .live
        .streams
        .disconnect_publisher(owned.event.id.as_str());
    let settings = &state.live.settings;
    Ok((
        StatusCode::CREATED,
        Json(StreamKeyBody {
            rtmp_url: settings.rtmp_url.clone(),
            srt_url: settings
                .srt_url
                .as_ref()
                .map(|url| format!("{url}?streamid={key}")),
            stream_key: key,
        }),
    ))
}

/// The stream's status and playback URLs, for the event's ticket holders, its organizer and
/// admins.
#[utoipa::path(
    get, path = "/api/v1/events/{id}/stream", tag = "live",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "Status and viewer-bound playback URLs", body = StreamBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "No ticket for this event", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
    )
)]
pub async fn get_stream(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<StreamBody>, ApiError> {
    let id = EventId::from_string(id);
    let event = state
        .events
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let manages = crate::live::may_watch(&state, &user, &event).await?;
    let stream = state.store.stream(&id).await?;
    let live = &state.live;
    let expires_at = Utc::now()
        + chrono::Duration::from_std(live.settings.token_ttl)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
    Ok(Json(StreamBody {
        status: stream
            .as_ref()
            .map_or_else(|| "idle".to_string(), |stream| stream.status.clone()),
        problem: stream.and_then(|stream| stream.problem),
        hls_url: live.playback_url(id.as_str(), user.id.as_str(), "master.m3u8"),
        dash_url: live.playback_url(id.as_str(), user.id.as_str(), "manifest.mpd"),
        expires_at,
        viewers: manages.then(|| live.viewers(id.as_str())),
    }))
}

/// The event's recorded shows (organizer).
#[utoipa::path(
    get, path = "/api/v1/events/{id}/recordings", tag = "live",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "Recordings, oldest first", body = RecordingList),
        (status = 403, description = "Not the event's organizer", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
    )
)]
pub async fn list_recordings(
    State(state): State<AppState>,
    owned: OwnedEvent,
) -> Result<Json<RecordingList>, ApiError> {
    let id = owned.event.id;
    let items = state
        .store
        .recordings_of(&id)
        .await?
        .into_iter()
        .map(|recording| RecordingBody {
            url: format!("/api/v1/events/{}/recordings/{}", id.as_str(), recording.id),
            id: recording.id,
            bytes: recording.bytes,
            duration_ms: recording.duration_ms,
            started_at: recording.started_at,
            ended_at: recording.ended_at,
        })
        .collect();
    Ok(Json(RecordingList { items }))
}

/// One recording's MP4 (organizer).
#[utoipa::path(
    get, path = "/api/v1/events/{id}/recordings/{recording_id}", tag = "live",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Event id"),
        ("recording_id" = String, Path, description = "Recording id"),
    ),
    responses(
        (status = 200, description = "The recording (video/mp4)"),
        (status = 403, description = "Not the event's organizer", body = ErrorBody),
        (status = 404, description = "No such event or recording", body = ErrorBody),
    )
)]
pub async fn download_recording(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((event_id, recording_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let event_id = EventId::from_string(event_id);
    let event = state
        .store
        .event(&event_id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    if !user.may_manage(&event.owner_id) {
        return Err(if crate::access::is_public(&event) {
            ApiError::forbidden("only the event's organizer or an admin may do this")
        } else {
            ApiError::not_found("event")
        });
    }
    let recording = state
        .store
        .recordings_of(&event_id)
        .await?
        .into_iter()
        .find(|recording| recording.id == recording_id)
        .ok_or_else(|| ApiError::not_found("recording"))?;
    let (size, chunks) = state
        .live
        .recordings
        .open(&recording.object_key)
        .await
        .map_err(|error| ApiError::unavailable("recordings", error))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("video/mp4")),
            (header::CONTENT_LENGTH, HeaderValue::from(size)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// How long players and caches may keep a playlist: under half a segment, so a cache in
/// front refetches it once per second however many viewers ask.
const PLAYLIST_CACHE: &str = "public, max-age=1";
/// Segments never change under their name (each transcoder run names its own).
const SEGMENT_CACHE: &str = "public, max-age=31536000, immutable";

fn media_type(file: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let extension = file.rsplit_once('.')?.1;
    Some(match extension {
        "m3u8" => ("application/vnd.apple.mpegurl", PLAYLIST_CACHE, "playlist"),
        "mpd" => ("application/dash+xml", PLAYLIST_CACHE, "playlist"),
        // `video/iso.segment` is the registered type, but Chromium's own HLS player refuses it.
        "m4s" => ("video/mp4", SEGMENT_CACHE, "segment"),
        _ => return None,
    })
}

/// Names the packager writes; anything else (paths, dot files) is not served.
fn valid_file_name(file: &str) -> bool {
    !file.is_empty()
        && file.len() <= 96
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

fn media_forbidden(error: marquee_media::TokenError) -> ApiError {
    metrics::counter!("marquee_media_refused_total").increment(1);
    ApiError::forbidden(error.to_string())
}

/// The origin: a stream's playlists and segments, for a valid playback token. Media playlists
/// are low-latency HLS (`marquee_media::llhls`): they list each segment's parts and answer
/// blocking reloads (`?_HLS_msn=…&_HLS_part=…`) once the part asked for is there.
pub async fn media(
    State(state): State<AppState>,
    Path((event, token, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    version: axum::http::Version,
) -> Result<Response, ApiError> {
    let viewer = verify_playback(&state, &event, &token)?;
    serve_media(&state, &event, &viewer, &file, query.as_deref(), version).await
}

/// The viewer a playback token names, if it is valid for `event` now; the contract's 403
/// otherwise.
pub(crate) fn verify_playback(
    state: &AppState,
    event: &str,
    token: &str,
) -> Result<marquee_media::Viewer, ApiError> {
    state
        .live
        .tokens
        .verify(event, token, Utc::now().timestamp())
        .map_err(media_forbidden)
}

/// [`media`] for a viewer already verified, without axum's extractors: also called by the
/// lean HTTP/1.1 path (`crate::media_listener`) that serves most of these requests.
pub(crate) async fn serve_media(
    state: &AppState,
    event: &str,
    viewer: &marquee_media::Viewer,
    file: &str,
    query: Option<&str>,
    version: axum::http::Version,
) -> Result<Response, ApiError> {
    let (content_type, cache, kind) = match media_type(file) {
        Some(found) if valid_file_name(file) && valid_file_name(event) => found,
        _ => return Err(ApiError::not_found("media file")),
    };
    metrics::counter!("marquee_media_requests_total", "kind" => kind).increment(1);
    if kind == "playlist" {
        state.live.saw_viewer(event, &viewer.viewer);
    }
    let dir = marquee_media::stream_dir(&state.live.settings.media_root, event);
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
    ];
    if llhls::is_media_playlist(file) {
        let request = llhls::blocking_request(query).map_err(playlist_error)?;
        let playlist = llhls::low_latency_playlist(&state.live.edge, &dir, file, request)
            .await
            .map_err(playlist_error)?;
        return Ok((headers, playlist).into_response());
    }
    if let Some((segment, index)) = llhls::parse_part_name(file) {
        metrics::counter!("marquee_media_requests_total", "kind" => "part").increment(1);
        return part(state, &dir.join(segment), index)
            .await
            .map(|part| (headers, part).into_response());
    }
    let path = dir.join(file);
    // The packager renames a segment into place once it is whole (ffmpeg writes `*.tmp`
    // first), so a segment found is complete and may be kept, and sent from its file
    // (`crate::zero_copy`); playlists change every segment and are always read afresh.
    let read = if kind == "segment" {
        // A hit (nearly every request) costs one lookup and no copy of the path.
        match state.live.segments.get(&path).await {
            Some(bytes) => Ok(bytes),
            None => state
                .live
                .segments
                .try_get_with(path.clone(), read_segment(path.clone()))
                .await
                .map_err(|error| std::io::Error::new(error.kind(), error.to_string())),
        }
    } else {
        tokio::fs::read(&path).await.map(bytes::Bytes::from)
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && kind == "segment" => {
            // Not whole yet: at the live edge, sent as the packager writes it.
            let mut growing = match state.live.edge.follow(&path).await {
                Ok(Some(growing)) => growing,
                Ok(None) => return Err(ApiError::not_found("media file")),
                Err(error) => return Err(ApiError::unavailable("media", error)),
            };
            if !growing.started().await {
                return Err(ApiError::not_found("media file"));
            }
            metrics::counter!("marquee_media_requests_total", "kind" => "growing_segment")
                .increment(1);
            if version >= axum::http::Version::HTTP_11 {
                return Ok((headers, Body::from_stream(growing.into_stream())).into_response());
            }
            // HTTP/1.0 has no chunked transfer: the body would end with the connection, and an
            // abandoned segment would look whole to the peer (a proxy would cache it). It gets
            // the segment once whole, with its length.
            let mut whole = Vec::new();
            let mut chunks = std::pin::pin!(growing.into_stream());
            while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
                match chunk {
                    Ok(chunk) => whole.extend_from_slice(&chunk),
                    Err(error) => return Err(ApiError::unavailable("media", error)),
                }
            }
            return Ok((headers, bytes::Bytes::from(whole)).into_response());
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found("media file"))
        }
        Err(error) => return Err(ApiError::unavailable("media", error)),
    };
    Ok((headers, bytes).into_response())
}

fn playlist_error(error: llhls::PlaylistError) -> ApiError {
    match error {
        llhls::PlaylistError::BadRequest(message) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
        }
        llhls::PlaylistError::NotYet => ApiError::unavailable("media", error),
        llhls::PlaylistError::Io(error) if error.kind() == std::io::ErrorKind::NotFound => {
            ApiError::not_found("media file")
        }
        llhls::PlaylistError::Io(error) => ApiError::unavailable("media", error),
    }
}

/// Part `index` of the segment at `path` (one CMAF fragment): from the whole segment once it
/// is, or as soon as the packager has written it.
async fn part(
    state: &AppState,
    path: &std::path::Path,
    index: usize,
) -> Result<bytes::Bytes, ApiError> {
    let live = &state.live;
    let whole = live
        .segments
        .try_get_with(path.to_path_buf(), read_segment(path.to_path_buf()))
        .await;
    match whole {
        Ok(segment) => {
            let fragments = live
                .edge
                .fragments_of(path, Some(&segment))
                .await
                .map_err(|error| ApiError::unavailable("media", error))?;
            let end = fragments
                .get(index)
                .map(|fragment| fragment.end)
                .ok_or_else(|| ApiError::not_found("media file"))?;
            let start = index
                .checked_sub(1)
                .and_then(|before| fragments.get(before))
                .map_or(0, |before| before.end);
            let (start, end) = (usize::try_from(start), usize::try_from(end));
            match (start, end) {
                // A slice of the cached segment: still sent from its file.
                (Ok(start), Ok(end)) if start <= end && end <= segment.len() => {
                    Ok(segment.slice(start..end))
                }
                _ => Err(ApiError::not_found("media file")),
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut growing = match live.edge.follow(path).await {
                Ok(Some(growing)) => growing,
                Ok(None) => return Err(ApiError::not_found("media file")),
                Err(error) => return Err(ApiError::unavailable("media", error)),
            };
            if !growing.started().await {
                return Err(ApiError::not_found("media file"));
            }
            match growing.fragment(index).await {
                Ok(Some(part)) => Ok(part),
                Ok(None) => Err(ApiError::not_found("media file")),
                Err(error) => Err(ApiError::unavailable("media", error)),
            }
        }
        Err(error) => Err(ApiError::unavailable("media", error)),
    }
}

/// A whole segment, kept open so that it can be sent with `sendfile`.
async fn read_segment(path: std::path::PathBuf) -> std::io::Result<bytes::Bytes> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let mut data = Vec::with_capacity(usize::try_from(file.metadata()?.len()).unwrap_or(0));
        file.read_to_end(&mut data)?;
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if !marquee_media::is_whole_file(name, &data) {
            // Still being written in place: not there yet, and not to be cached.
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the file is still being written",
            ));
        }
        Ok(crate::zero_copy::file_backed(data, file))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// For a point of presence (nginx `auth_request`): 204 when the token in `X-Original-URI`
/// (`/live/{event}/{token}/…`) is valid for its event now, 403 otherwise.
pub async fn media_auth(State(state): State<AppState>, headers: HeaderMap) -> StatusCode {
    let uri = headers
        .get("x-original-uri")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let mut parts = uri.trim_start_matches('/').split('/');
    let (Some("live"), Some(event), Some(token)) = (parts.next(), parts.next(), parts.next())
    else {
        return StatusCode::FORBIDDEN;
    };
    metrics::counter!("marquee_media_auth_total").increment(1);
    match state
        .live
        .tokens
        .verify(event, token, Utc::now().timestamp())
    {
        Ok(viewer) => {
            state.live.saw_viewer(event, &viewer.viewer);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::FORBIDDEN,
    }
}
