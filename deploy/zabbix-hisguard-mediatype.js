// Zabbix webhook media type "hisguard": forwards each problem and its recovery to the hisguard server,
// which maps it onto the emergency plan (trigger, scope, severity) by the rules in [server.interop.NAME].
//
// Administration → Media types → Create (type Webhook), script = this file, parameters:
//   URL          https://hisguard.example:8470        (the hisguard server)
//   Token        the token from `hisguard-server token create --agent NAME --site SITE`
//   event_id     {EVENT.ID}
//   event_value  {EVENT.VALUE}
//   event_name   {EVENT.NAME}
//   host         {HOST.NAME}
//   severity     {EVENT.NSEVERITY}
//   tags         {EVENT.TAGSJSON}
//   url          {$ZABBIX.URL}/tr_events.php?triggerid={TRIGGER.ID}&eventid={EVENT.ID}   (optional)
// and message templates for "Problem" and "Problem recovery" (the body is not used).
var params = JSON.parse(value);
var req = new HttpRequest();
req.addHeader('Content-Type: application/json');
req.addHeader('Authorization: Bearer ' + params.Token);
var body = {
    event_id: params.event_id,
    event_value: params.event_value,
    event_name: params.event_name,
    host: params.host,
    severity: params.severity,
    tags: params.tags,
    url: params.url || ''
};
var resp = req.post(params.URL.replace(/\/+$/, '') + '/api/v1/interop/zabbix', JSON.stringify(body));
if (req.getStatus() !== 200) {
    throw 'hisguard answered HTTP ' + req.getStatus() + ': ' + resp;
}
return 'OK';
