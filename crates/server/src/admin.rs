//! The room admin API: REST/JSON under `/api/v1`, for the operator's backend.
//!
//! Every call carries `Authorization: Bearer <access token>` and needs a grant:
//! `room_create` to create or delete rooms, `room_list` to list and read them,
//! `room_admin` (for that room, or for every room when the grant names none) to manage a
//! room's participants, tracks and metadata. The OpenAPI document at
//! `/api/v1/openapi.json` is generated from these handlers (utoipa), so it cannot drift
//! from what is served.

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use switchyard_router::admin::{PermissionsView, TrackStatsView};
use switchyard_router::{
    ParticipantView, Permissions, RoomId, RoomInfo, RoomOptions, RoomStats, RouterError, TrackId,
    TrackView,
};
use switchyard_signal::token::{unix_now, Claims, Grant};
use switchyard_signal::validate_room_name;

use crate::AppState;

/// An admin API failure: the HTTP status and a JSON body `{"error": {code, message}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `unauthorized`, `forbidden`, `not_found`, `conflict`, `bad_request`,
    /// `payload_too_large` or `internal`.
    pub code: String,
    /// For humans; names the field or object at fault.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code.to_owned(),
                    message: self.message,
                },
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<RouterError> for ApiError {
    fn from(e: RouterError) -> ApiError {
        let message = e.to_string();
        match e {
            RouterError::UnknownRoom(_)
            | RouterError::RoomClosed
            | RouterError::UnknownParticipant(_)
            | RouterError::ParticipantGone
            | RouterError::UnknownTrack(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            RouterError::RoomExists(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            _ => {
                tracing::error!(error = %message, "admin API call failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed; see its log",
                )
            }
        }
    }
}

/// The verified claims of the bearer token of an admin call.
pub struct Caller(Claims);

impl Caller {
    fn grant(&self) -> &Grant {
        &self.0.grant
    }

    fn require(&self, allowed: bool, what: &str) -> Result<(), ApiError> {
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the token does not grant {what}"
            )))
        }
    }

    fn may_create(&self) -> Result<(), ApiError> {
        self.require(self.grant().room_create, "`room_create`")
    }

    fn may_list(&self) -> Result<(), ApiError> {
        self.require(self.grant().room_list, "`room_list`")
    }

    fn may_administer(&self, room: &str) -> Result<(), ApiError> {
        self.require(
            self.grant().administers(room),
            &format!("`room_admin` for room `{room}`"),
        )
    }

    /// Reading one room: `room_list`, or administering that room.
    fn may_read(&self, room: &str) -> Result<(), ApiError> {
        self.require(
            self.grant().room_list || self.grant().administers(room),
            &format!("`room_list` or `room_admin` for room `{room}`"),
        )
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("`Authorization` must be `Bearer <token>`"))?;
        let claims = app
            .keys
            .verify(token, unix_now())
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        Ok(Caller(claims))
    }
}

/// A JSON body read within `api.max_body_bytes` (413 beyond), parsed with errors that
/// name the field at fault (400).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, ApiError> {
        let limit = app.config.api.max_body_bytes;
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {limit} bytes (api.max_body_bytes)"),
                )
            })?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || path.is_empty() {
                ApiError::bad_request(format!("invalid body: {inner}"))
            } else {
                ApiError::bad_request(format!("invalid field `{path}`: {inner}"))
            }
        })?;
        Ok(ApiJson(value))
    }
}

/// `POST /api/v1/rooms`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// 1 to `signal.max_room_name_bytes` bytes, no whitespace or control characters.
    pub name: String,
    /// Default: `room.max_participants`.
    pub max_participants: Option<usize>,
    /// Seconds the room stays open while empty. Default: `room.empty_timeout_secs`.
    pub empty_timeout: Option<u64>,
    /// Free text handed to participants (`joined.room_metadata`, `room_updated`).
    pub metadata: Option<String>,
}

/// `PATCH /api/v1/rooms/{room}`: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoom {
    /// Sent to every participant as `room_updated`.
    pub metadata: Option<String>,
    /// Applies to later joins.
    pub max_participants: Option<usize>,
}

/// `PATCH .../permissions`: the permissions to change; the others stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePermissions {
    pub can_publish: Option<bool>,
    pub can_subscribe: Option<bool>,
    pub can_publish_data: Option<bool>,
}

/// `POST .../tracks/{track}/mute`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteTrack {
    pub muted: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomList {
    pub rooms: Vec<RoomInfo>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ParticipantList {
    pub participants: Vec<ParticipantView>,
}

fn room_id(app: &AppState, room: &str) -> Result<RoomId, ApiError> {
    validate_room_name(room, app.config.signal.max_room_name_bytes)
        .map_err(|e| ApiError::bad_request(format!("room name `{room}` {e}")))?;
    Ok(RoomId::new(room))
}

/// Create a room ahead of its participants.
#[utoipa::path(
    post, path = "/api/v1/rooms", tag = "rooms",
    request_body = CreateRoom,
    responses(
        (status = 201, description = "Created", body = RoomInfo),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_create`", body = ErrorBody),
        (status = 409, description = "A room of that name exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create_room(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateRoom>,
) -> Result<(StatusCode, Json<RoomInfo>), ApiError> {
    caller.may_create()?;
    let room = validate_room_name(&body.name, app.config.signal.max_room_name_bytes)
        .map(|()| RoomId::new(&body.name))
        .map_err(|e| ApiError::bad_request(format!("invalid field `name`: {e}")))?;
    let defaults = app.router.default_room_options();
    let max_participants = body.max_participants.unwrap_or(defaults.max_participants);
    if max_participants == 0 {
        return Err(ApiError::bad_request(
            "invalid field `max_participants`: must be at least 1",
        ));
    }
    let options = RoomOptions {
        max_participants,
        empty_timeout_secs: body.empty_timeout.unwrap_or(defaults.empty_timeout_secs),
        metadata: body.metadata.unwrap_or_default(),
    };
    let info = app.router.create_room(room, options).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// List the open rooms, with participant and track counts.
#[utoipa::path(
    get, path = "/api/v1/rooms", tag = "rooms",
    responses(
        (status = 200, description = "The rooms, by name", body = RoomList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_list`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_rooms(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<RoomList>, ApiError> {
    caller.may_list()?;
    Ok(Json(RoomList {
        rooms: app.router.list_rooms().await,
    }))
}

/// One room.
#[utoipa::path(
    get, path = "/api/v1/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    responses(
        (status = 200, description = "The room", body = RoomInfo),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_list` or `room_admin`", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_room(
    State(app): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
) -> Result<Json<RoomInfo>, ApiError> {
    caller.may_read(&room)?;
    let room = room_id(&app, &room)?;
    Ok(Json(app.router.room_info(&room).await?))
}

/// Change a room's metadata (participants hear `room_updated`) or participant limit.
#[utoipa::path(
    patch, path = "/api/v1/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    request_body = UpdateRoom,
    responses(
        (status = 200, description = "The room as updated", body = RoomInfo),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_admin` for the room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn update_room(
    State(app): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<UpdateRoom>,
) -> Result<Json<RoomInfo>, ApiError> {
    caller.may_administer(&room)?;
    if body.max_participants == Some(0) {
        return Err(ApiError::bad_request(
            "invalid field `max_participants`: must be at least 1",
        ));
    }
    let room = room_id(&app, &room)?;
    let info = app
        .router
        .update_room(&room, body.metadata, body.max_participants)
        .await?;
    Ok(Json(info))
}

/// Close a room: every participant gets `disconnected {reason: room_deleted}`.
#[utoipa::path(
    delete, path = "/api/v1/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_create`", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn delete_room(
    State(app): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.may_create()?;
    let room = room_id(&app, &room)?;
    app.router.delete_room(&room).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Bitrates in and out of every track of a room.
#[utoipa::path(
    get, path = "/api/v1/rooms/{room}/stats", tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    responses(
        (status = 200, description = "Bitrates, sampled every second", body = RoomStats),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_list` or `room_admin`", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn room_stats(
    State(app): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
) -> Result<Json<RoomStats>, ApiError> {
    caller.may_read(&room)?;
    let room = room_id(&app, &room)?;
    Ok(Json(app.router.room_stats(&room).await?))
}

/// The participants of a room.
#[utoipa::path(
    get, path = "/api/v1/rooms/{room}/participants", tag = "participants",
    params(("room" = String, Path, description = "Room name")),
    responses(
        (status = 200, description = "In join order", body = ParticipantList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_admin` for the room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_participants(
    State(app): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
) -> Result<Json<ParticipantList>, ApiError> {
    caller.may_administer(&room)?;
    let room = room_id(&app, &room)?;
    Ok(Json(ParticipantList {
        participants: app.router.participants(&room).await?,
    }))
}

/// One participant: identity, name, join time, permissions, connection states, published
/// tracks with layers and bitrates.
#[utoipa::path(
    get, path = "/api/v1/rooms/{room}/participants/{identity}", tag = "participants",
    params(
        ("room" = String, Path, description = "Room name"),
        ("identity" = String, Path, description = "The participant's identity (its token's `sub`)"),
    ),
    responses(
        (status = 200, description = "The participant", body = ParticipantView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_admin` for the room", body = ErrorBody),
        (status = 404, description = "No such room or participant", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_participant(
    State(app): State<AppState>,
    caller: Caller,
    Path((room, identity)): Path<(String, String)>,
) -> Result<Json<ParticipantView>, ApiError> {
    caller.may_administer(&room)?;
    let room = room_id(&app, &room)?;
    Ok(Json(app.router.participant(&room, &identity).await?))
}

/// Disconnect a participant (`disconnected {reason: removed}`).
#[utoipa::path(
    delete, path = "/api/v1/rooms/{room}/participants/{identity}", tag = "participants",
    params(
        ("room" = String, Path, description = "Room name"),
        ("identity" = String, Path, description = "The participant's identity"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_admin` for the room", body = ErrorBody),
        (status = 404, description = "No such room or participant", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn remove_participant(
    State(app): State<AppState>,
    caller: Caller,
    Path((room, identity)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.may_administer(&room)?;
    let room = room_id(&app, &room)?;
    app.router.remove_participant(&room, &identity).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change what a participant may do, live: revoking `can_publish` unpublishes its
/// tracks; revoking `can_subscribe` stops everything forwarded to it.
#[utoipa::path(
    patch, path = "/api/v1/rooms/{room}/participants/{identity}/permissions", tag = "participants",
    params(
        ("room" = String, Path, description = "Room name"),
        ("identity" = String, Path, description = "The participant's identity"),
    ),
    request_body = UpdatePermissions,
    responses(
        (status = 200, description = "The participant as updated", body = ParticipantView),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_admin` for the room", body = ErrorBody),
        (status = 404, description = "No such room or participant", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn update_permissions(
    State(app): State<AppState>,
    caller: Caller,
    Path((room, identity)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdatePermissions>,
) -> Result<Json<ParticipantView>, ApiError> {
    caller.may_administer(&room)?;
    let room = room_id(&app, &room)?;
    let current: PermissionsView = app.router.participant(&room, &identity).await?.permissions;
    let permissions = Permissions {
        can_publish: body.can_publish.unwrap_or(current.can_publish),
        can_subscribe: body.can_subscribe.unwrap_or(current.can_subscribe),
        can_publish_data: body.can_publish_data.unwrap_or(current.can_publish_data),
    };
    Ok(Json(
        app.router
            .set_permissions(&room, &identity, permissions)
            .await?,
    ))
}

/// Mute or unmute a published track from the server side: forwarding stops (or resumes,
/// at a keyframe) and everyone hears `track_muted`.
#[utoipa::path(
    post, path = "/api/v1/rooms/{room}/participants/{identity}/tracks/{track}/mute", tag = "participants",
    params(
        ("room" = String, Path, description = "Room name"),
        ("identity" = String, Path, description = "The publisher's identity"),
        ("track" = String, Path, description = "The track id"),
    ),
    request_body = MuteTrack,
    responses(
        (status = 200, description = "The track as updated", body = TrackView),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token lacks `room_admin` for the room", body = ErrorBody),
        (status = 404, description = "No such room, participant or track", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn mute_track(
    State(app): State<AppState>,
    caller: Caller,
    Path((room, identity, track)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<MuteTrack>,
) -> Result<Json<TrackView>, ApiError> {
    caller.may_administer(&room)?;
    let room = room_id(&app, &room)?;
    Ok(Json(
        app.router
            .mute_track(&room, &identity, TrackId::new(track), body.muted)
            .await?,
    ))
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token (HS256 JWT) signed with one of the server's API keys",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard room admin API",
        description = "Create, inspect and manage rooms, participants and tracks. See docs/admin-api.md."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody, ErrorDetail, TrackStatsView, PermissionsView))
)]
struct ApiDoc;

/// Any other path under `/api/v1`: a JSON 404 rather than the web client's.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no admin API route `{}`", uri.path()),
    )
}

/// The admin routes and the OpenAPI document describing exactly them.
pub fn routes() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_room, list_rooms))
        .routes(routes!(get_room, update_room, delete_room))
        .routes(routes!(room_stats))
        .routes(routes!(list_participants))
        .routes(routes!(get_participant, remove_participant))
        .routes(routes!(update_permissions))
        .routes(routes!(mute_track))
        .split_for_parts();
    openapi.info.version = env!("CARGO_PKG_VERSION").to_owned();
    (router, openapi)
}
